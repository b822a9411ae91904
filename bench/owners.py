"""Log out everywhere: the cost of ending one owner's sessions does not grow with the sessions stored.

For each store (MemoryStore, SQLiteStore, and RedisStore when ``--redis URL`` names a server that may be
flushed) and each size N (10,000 and 1,000,000 by default), the store is filled with N sessions of N/2 other
owners (two sessions each, as browsers of one user), untimed; then, for each repetition, one owner logs in on
10 browsers (untimed) and ``manager.end_sessions_of(owner)`` is timed. The figure is the median; the check
is that the largest size costs at most twice the smallest (the issue's promise: the index, not a scan).

Run: ``python -m bench.owners`` (from the repository root); ``--sizes 1000 10000`` for a quick look. It prints
one JSON object: milliseconds per store and size, and the ratio largest / smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List

import sessions

T0 = 1_700_000_000.0
BROWSERS = 10  # sessions of the owner who logs out everywhere
REPETITIONS = 15


def _record(owner: str) -> str:
    """A record as the manager writes it for a logged-in session (cookie, creation time, owner, one key)."""
    cookie = '{"cookie":{"originalMaxAge":86400000,"expires":"2023-11-15T22:13:20.000Z","httpOnly":true,"path":"/"}'
    return cookie + sessions._RecordFormat.after_cookie(int(T0 * 1000), '{"user_agent":"Firefox"}', None, owner)


def _fill(store: sessions.Store, size: int) -> None:
    """N sessions of other owners, written as fast as the store allows (SQLite in one transaction)."""
    expires = T0 + 86400
    if isinstance(store, sessions.SQLiteStore):
        db = store._connection()
        db.execute("BEGIN")
        db.executemany(
            f'INSERT INTO "{store.table}" (id, record, expires_at, owner) VALUES (?, ?, ?, ?)',
            ((f"id-{n}", _record(f"user-{n // 2}"), expires, f"user-{n // 2}") for n in range(size)),
        )
        db.execute("COMMIT")
        return
    if isinstance(store, sessions.RedisStore):
        pipe = store.client.pipeline(transaction=False)
        for n in range(size):
            pipe.set(store.prefix + f"id-{n}", _record(f"user-{n // 2}"), ex=86400)
            pipe.sadd(store._owner_key(f"user-{n // 2}"), f"id-{n}")
            if n % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
        return
    for n in range(size):
        store.set(f"id-{n}", _record(f"user-{n // 2}"), expires)


def _time_log_out_everywhere(store: sessions.Store) -> float:
    """Median milliseconds of ``end_sessions_of`` for an owner with ``BROWSERS`` sessions."""
    manager = sessions.SessionManager("bench secret", store=store, clock=lambda: T0)
    times = []
    for repetition in range(REPETITIONS):
        owner = f"leaving-{repetition}"
        for browser in range(BROWSERS):
            store.set(f"{owner}-{browser}", _record(owner), T0 + 86400)
        start = time.perf_counter()
        ended = manager.end_sessions_of(owner)
        times.append((time.perf_counter() - start) * 1000)
        assert ended == BROWSERS, ended
    return statistics.median(times)


def measure(sizes: List[int], redis_url: str = "") -> Dict[str, Any]:
    makers: Dict[str, Callable[[str], sessions.Store]] = {
        "memory": lambda directory: sessions.MemoryStore(clock=lambda: T0),
        "sqlite": lambda directory: sessions.SQLiteStore(os.path.join(directory, "s.db"), clock=lambda: T0),
    }
    if redis_url:
        import redis  # only when asked for

        def redis_store(directory: str) -> sessions.Store:
            client = redis.Redis.from_url(redis_url)
            client.flushdb()
            return sessions.RedisStore(client, clock=lambda: T0)

        makers["redis"] = redis_store
    results: Dict[str, Any] = {}
    for name, make in makers.items():
        figures = {}
        for size in sizes:
            with tempfile.TemporaryDirectory() as directory:
                store = make(directory)
                _fill(store, size)
                figures[size] = round(_time_log_out_everywhere(store), 4)
        ratio = figures[max(sizes)] / figures[min(sizes)]
        results[name] = {"ms": figures, "ratio": round(ratio, 2), "within_2x": ratio <= 2}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--redis", default="", help="a Redis URL whose database may be flushed")
    args = parser.parse_args()
    print(json.dumps(measure(args.sizes, args.redis), indent=2))


if __name__ == "__main__":
    main()
