"""Interpreter settings for long-running server processes (`tune_for_serving`).

Garbage collector. CPython's cyclic collector pauses the whole process, and a full
(generation 2) collection walks every tracked object: with 1,000 open sockets an API process
paused 150–290 ms at a time while sockets connected and under steady fan-out load
(bench/chat_fanout.py, see BENCHMARKS.md) — the p99 of every message in flight. Two standard
remedies:

* `gc.freeze()` once startup is done: the ~265,000 objects of imported modules, settings and
  pools move to a permanent generation no collection walks again;
* a larger generation-0 threshold: short-lived objects (frames, futures, per-send dicts) die by
  reference counting before a collection promotes them, so far fewer reach generation 2 and
  full collections become rare. 10,000 measured better than 50,000 (whose young collections
  took 15–45 ms each) and than the default.

GIL switch interval. SQLite runs on aiosqlite's threads and releases the GIL inside each
statement; to go on to the next one the thread must get the GIL back from the event loop,
which by default keeps it up to 5 ms. A ledger batch of a dozen statements then waits on
the busy loop for tens of milliseconds, and every send in it with it. At 0.5 ms, p99
send→deliver at 1,200 sends/s fell from 130–220 ms to 60–95 ms; 0.2 ms was worse again
(the switching itself costs).
"""

from __future__ import annotations

import gc
import sys

YOUNG_THRESHOLD = 10_000  # CPython's default is 700
SWITCH_INTERVAL_SECONDS = 0.0005  # CPython's default is 0.005


def tune_for_serving() -> None:
    """Call once the process has started: freeze what startup built, collect less often,
    hand the GIL to waiting threads sooner."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
