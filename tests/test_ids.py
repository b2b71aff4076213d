"""Snowflake ids: ordering, uniqueness across threads and nodes, clock trouble, overflow."""

from __future__ import annotations

import threading
import time

import pytest

import chatee.ids as ids
from chatee.ids import (
    MAX_NODE,
    MAX_SEQUENCE,
    NODE_BITS,
    SEQUENCE_BITS,
    SnowflakeGenerator,
    timestamp_ms,
)


def node_of(snowflake: int) -> int:
    return (snowflake >> SEQUENCE_BITS) & MAX_NODE


def sequence_of(snowflake: int) -> int:
    return snowflake & MAX_SEQUENCE


def test_ids_strictly_increase_in_one_generator() -> None:
    gen = SnowflakeGenerator(7)
    made = [gen.next_id() for _ in range(50_000)]
    assert all(a < b for a, b in zip(made, made[1:], strict=False))
    assert all(node_of(i) == 7 for i in made)
    assert all(0 < i < 1 << 63 for i in made)  # fits a signed BIGINT


def test_unique_across_threads() -> None:
    gen = SnowflakeGenerator(1)
    threads_n, per_thread = 8, 20_000
    results: list[list[int]] = [[] for _ in range(threads_n)]
    start = threading.Barrier(threads_n)

    def work(out: list[int]) -> None:
        start.wait()
        for _ in range(per_thread):
            out.append(gen.next_id())

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for out in results for i in out]
    assert len(everything) == threads_n * per_thread
    assert len(set(everything)) == len(everything)
    for out in results:  # each thread sees its own ids in increasing order
        assert all(a < b for a, b in zip(out, out[1:], strict=False))


def test_generators_on_different_nodes_never_collide() -> None:
    a, b = SnowflakeGenerator(0), SnowflakeGenerator(MAX_NODE)
    from_a, from_b = set(), set()
    for _ in range(30_000):
        from_a.add(a.next_id())
        from_b.add(b.next_id())
    assert len(from_a) == len(from_b) == 30_000
    assert not from_a & from_b
    assert {node_of(i) for i in from_a} == {0}
    assert {node_of(i) for i in from_b} == {MAX_NODE}


def test_generators_on_different_nodes_same_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    # the same clock reading and sequence on two nodes must still give two ids
    frozen = 1_800_000_000_000
    monkeypatch.setattr(ids, "_now_ms", lambda: frozen)
    gens = [SnowflakeGenerator(n) for n in (5, 6)]
    made = [g.next_id() for g in gens for _ in range(10)]
    assert len(set(made)) == 20
    assert {timestamp_ms(i) for i in made} == {frozen}


def test_timestamp_is_now() -> None:
    gen = SnowflakeGenerator(3)
    before = time.time_ns() // 1_000_000
    made = gen.next_id()
    after = time.time_ns() // 1_000_000
    assert before <= timestamp_ms(made) <= after


def test_new_id_uses_a_default_generator() -> None:
    a, b = ids.new_id(), ids.new_id()
    assert a < b


@pytest.mark.parametrize("node_id", [-1, MAX_NODE + 1, 1 << NODE_BITS, 10**6])
def test_node_id_out_of_range_is_rejected(node_id: int) -> None:
    with pytest.raises(ValueError):
        SnowflakeGenerator(node_id)


@pytest.mark.parametrize("node_id", [0, 1, MAX_NODE])
def test_node_id_bounds_are_accepted(node_id: int) -> None:
    assert node_of(SnowflakeGenerator(node_id).next_id()) == node_id


def test_configure_validates_node_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "_default", None)  # restored afterwards
    with pytest.raises(ValueError):
        ids.configure(MAX_NODE + 1)
    ids.configure(42)
    assert node_of(ids.new_id()) == 42


def test_clock_going_backwards_still_increases(monkeypatch: pytest.MonkeyPatch) -> None:
    t = 1_800_000_000_000
    readings = [t, t + 1, t + 1, t - 5, t - 1000, t - 3, t + 1, t + 2, t + 1, t + 3]
    it = iter(readings)
    monkeypatch.setattr(ids, "_now_ms", lambda: next(it))
    gen = SnowflakeGenerator(9)
    made = [gen.next_id() for _ in readings]
    assert all(a < b for a, b in zip(made, made[1:], strict=False))
    # while the clock is behind, ids keep the last tick and count up the sequence
    assert [timestamp_ms(i) for i in made] == [
        t, t + 1, t + 1, t + 1, t + 1, t + 1, t + 1, t + 2, t + 2, t + 3
    ]  # fmt: skip
    assert all(node_of(i) == 9 for i in made)


def test_sequence_overflow_waits_for_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    t = 1_800_000_000_000
    calls = 0
    per_ms = MAX_SEQUENCE + 1  # 4096

    def now() -> int:
        # 4096 ids fit in tick t; the 4097th id and 3 more polls still see t, then t + 1
        nonlocal calls
        calls += 1
        return t if calls <= per_ms + 4 else t + 1

    monkeypatch.setattr(ids, "_now_ms", now)
    gen = SnowflakeGenerator(2)
    made = [gen.next_id() for _ in range(per_ms + 1)]
    assert len(set(made)) == per_ms + 1
    assert all(a < b for a, b in zip(made, made[1:], strict=False))
    assert [sequence_of(i) for i in made[:per_ms]] == list(range(per_ms))
    assert {timestamp_ms(i) for i in made[:per_ms]} == {t}
    assert timestamp_ms(made[-1]) == t + 1
    assert sequence_of(made[-1]) == 0
    assert calls == per_ms + 5  # it polled the clock until the tick changed
