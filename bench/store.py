"""MemoryStore at scale: memory per session, get/set rates, and the cost of pruning 1,000 expired sessions.

For each size N, one store is filled with N live sessions through ``store.set`` (each with its own random
32-character id, its own record text in express-session's format and its own expiry), then:

- memory: tracemalloc traces the fill. The ids and record texts are made before tracing starts, so the
  traced bytes are what the store itself adds (its dict, entries, expiry floats, heap). "Beyond the JSON
  text" = those bytes + the id string (``sys.getsizeof``); the record str objects (the JSON text, with
  Python's 49-byte str header) are not counted. Measured right after the fill and again in steady state,
  after every session has been written once more (the heap then also holds stale entries, up to its
  rebuild threshold).
- get / set per second on a random sample of the stored ids (set rewrites an existing session).
- prune: 1,000 sessions expiring before all the others are added (untimed), the injected clock moves past
  their expiry, and ``store.prune()`` is timed; median over repetitions.
"""

from __future__ import annotations

import base64
import gc
import os
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any, Dict, List, Tuple

import sessions

from . import timing

T0 = 1_700_000_000.0  # the fake clock's start (seconds since the epoch)
LIVE_FOR = 30 * 86400.0  # live sessions expire long after every prune below


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_ids(n: int) -> List[str]:
    """n random 32-character base64url ids (like the default genid), made in bulk."""
    text = base64.urlsafe_b64encode(os.urandom(24 * n)).decode("ascii")
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


def make_record(i: int) -> str:
    expires_ms = int((T0 + LIVE_FOR) * 1000) + i
    seconds, ms = divmod(expires_ms, 1000)
    t = time.gmtime(seconds)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ms:03d}Z"
    return (
        '{"cookie":{"originalMaxAge":3600000,"expires":"' + iso + '","httpOnly":true,"path":"/","sameSite":"lax"},'
        f'"user_id":{100000 + i},"name":"user{i}","csrf":"Xo1pY4n0eS2bq3dZ8QmL5vK7wR9tU6aC","views":{i % 97}}}'
    )


def fill(store: sessions.MemoryStore, ids: List[str], records: List[str], base: float) -> None:
    set_ = store.set
    for i, (sid, record) in enumerate(zip(ids, records)):
        set_(sid, record, base + i * 0.001)  # a float per session, as the manager passes


def measure_size(n: int, sample: int, prune_reps: int) -> Dict[str, Any]:
    clock = FakeClock(T0)
    store = sessions.MemoryStore(clock=clock)
    ids = make_ids(n)
    records = [make_record(i) for i in range(n)]
    text_bytes = statistics.fmean(len(r) for r in records)  # compact ASCII JSON: 1 byte per character
    id_bytes = statistics.fmean(sys.getsizeof(s) for s in ids[:1000])

    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        base_mem = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        fill(store, ids, records, T0 + LIVE_FOR)
        fill_seconds = time.perf_counter() - start
        after_fill = (tracemalloc.get_traced_memory()[0] - base_mem) / n
        fill(store, ids, records, T0 + LIVE_FOR + 60)  # every session written once more (a later request)
        steady = (tracemalloc.get_traced_memory()[0] - base_mem) / n
    finally:
        tracemalloc.stop()
        gc.enable()
    del records
    stored = len(store)

    rng = random.Random(n)
    picks = [ids[rng.randrange(n)] for _ in range(sample)]
    record = make_record(0)
    got: List[Any] = []

    def get_loop(count: int) -> float:
        get = store.get
        chosen = picks[:count] if count <= len(picks) else (picks * (count // len(picks) + 1))[:count]
        start = time.perf_counter()
        for sid in chosen:
            value = get(sid)
        elapsed = time.perf_counter() - start
        got.append(value is not None)
        return elapsed

    def set_loop(count: int) -> float:
        set_ = store.set
        chosen = picks[:count] if count <= len(picks) else (picks * (count // len(picks) + 1))[:count]
        expires = T0 + LIVE_FOR + 120
        start = time.perf_counter()
        for sid in chosen:
            set_(sid, record, expires)
        return time.perf_counter() - start

    rates = {}
    for name, loop in (("get", get_loop), ("set", set_loop)):
        per_op = [timing.time_loop(loop, sample) / sample for _ in range(3)]
        rates[name + "_per_s"] = 1 / statistics.median(per_op)

    prune_times, pruned = [], []
    for rep in range(prune_reps):
        now = T0 + rep * 10.0
        clock.now = now
        for sid in make_ids(1000):
            store.set(sid, record, now + 1.0)
        clock.now = now + 2.0
        gc.disable()
        try:
            start = time.perf_counter()
            removed = store.prune()
            prune_times.append(time.perf_counter() - start)
        finally:
            gc.enable()
        pruned.append(removed)
    live_after = len(store)
    del store, ids
    gc.collect()

    return {
        "n": n,
        "json_text_bytes": text_bytes,
        "id_bytes": id_bytes,
        "overhead_after_fill": after_fill + id_bytes,
        "overhead_steady": steady + id_bytes,
        "fill_s": fill_seconds,
        **rates,
        "prune_ms": statistics.median(prune_times) * 1e3,
        "checks": {
            "stored_all": stored == n,
            "gets_found": all(got) and bool(got),
            "pruned_1000_each_time": all(r == 1000 for r in pruned),
            "live_kept": live_after == n,
        },
    }


def run(sizes: Tuple[int, ...], sample: int, prune_reps: int) -> Dict[str, Any]:
    results = [measure_size(n, sample, prune_reps) for n in sizes]
    checks = {}
    for r in results:
        for name, ok in r.pop("checks").items():
            checks[f"store_{r['n']}_{name}"] = ok
    return {"sizes": results, "checks": checks}
