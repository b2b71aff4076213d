"""Garbage-collector settings for long-running server processes.

CPython's cyclic collector pauses the whole process, and a full (generation 2) collection
walks every tracked object: with 1,000 open sockets an API process paused 150–290 ms at a
time while sockets connected and under steady fan-out load (bench/chat_fanout.py, see
BENCHMARKS.md) — the p99 of every message in flight. Two standard remedies:

* `gc.freeze()` once startup is done: the ~265,000 objects of imported modules, settings and
  pools move to a permanent generation no collection walks again;
* a larger generation-0 threshold: short-lived objects (frames, futures, per-send dicts) die by
  reference counting before a collection promotes them, so far fewer reach generation 2 and
  full collections become rare. 10,000 measured better than 50,000 (whose young collections
  took 15–45 ms each) and than the default.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # CPython's default is 700


def settle_gc() -> None:
    """Call once the process has started: freeze what startup built, collect less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
