"""The apps bench/frameworks.py serves: one small page set per framework (Flask, FastAPI, Django), each
variant a session configuration chosen by the ``BENCH_APP`` environment variable (JSON: ``variant``,
``redis_port``, ``sqlite`` (a file path), ``seed`` (a file of MemoryStore records), ``profile`` (a path prefix:
each worker process profiles itself with cProfile from its start and writes ``<prefix>.<pid>`` on SIGUSR2;
``python3 bench/frameworks.py --profile ...`` reads them)).

Every app answers the same paths, and every page names its kind, the session it served and the view
counter it saw, so the load generator can check each response (bench/frameworks.lua):

- ``/read?k=K``: reads ``views`` from the session (``kind=read k=K views=N``);
- ``/write?k=K``: increments ``views`` (one key written);
- ``/untouched?k=K``: never touches the session (``views=-1``);
- ``/new``: sent without a session cookie; writes ``views = 1`` (a new session);
- ``/seed``: stores bench/cycle.py's DATA with ``views = 1`` (the harness seeds sessions through it);
- ``/config``: the session configuration, as text (printed by the harness).

The ``none`` variant serves the same pages without any session (``views=0``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from bench.cycle import DATA, SECRET  # noqa: F401 (SECRET: the apps sign with it)

CONFIG: Dict[str, Any] = json.loads(os.environ.get("BENCH_APP", '{"variant": "none"}'))
VARIANT: str = CONFIG["variant"]
SEEDED = {**DATA, "views": 1}
LIFETIME = 14 * 24 * 3600  # Starlette's default max_age; the lifetime every server-side variant is given

if CONFIG.get("profile"):  # SIGUSR2 writes the profile (servers end their workers by signals, without atexit)
    import cProfile
    import pstats
    import signal
    import threading
    import time

    _profiles = [cProfile.Profile(time.thread_time)]  # CPU time, per thread

    def _profile_thread(*_: Any) -> None:
        """Each new thread (the store's worker threads under ASGI) profiles itself from its first call."""
        profile = cProfile.Profile(time.thread_time)
        _profiles.append(profile)
        profile.enable()

    def _dump(*_: Any) -> None:
        _profiles[0].disable()
        stats = pstats.Stats(_profiles[0])
        for profile in _profiles[1:]:
            stats.add(profile)
        stats.dump_stats(f"{CONFIG['profile']}.{os.getpid()}")

    threading.setprofile(_profile_thread)
    signal.signal(signal.SIGUSR2, _dump)
    _profiles[0].enable()

def page(kind: str, k: str, views: int) -> str:
    return f"kind={kind} k={k} views={views}\n"


def redis_url() -> str:
    return f"redis://127.0.0.1:{CONFIG['redis_port']}/0"


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(redis_url())


def our_store() -> Any:
    """The sessions.py store of a ``sessions_*`` variant; MemoryStore starts with the harness's seeded
    records (every worker process holds its own MemoryStore, so each one gets the same sessions)."""
    import sessions

    kind = VARIANT.split("_", 1)[1]
    if kind == "memory":
        store = sessions.MemoryStore(default_ttl=LIFETIME)
        with open(CONFIG["seed"]) as f:
            seeds: List[List[Any]] = json.load(f)
        for sid, record, expires in seeds:
            store.set(sid, record, expires)
        return store
    if kind == "sqlite":
        return sessions.SQLiteStore(CONFIG["sqlite"])
    if kind == "redis":
        return sessions.RedisStore(redis_client())
    if kind == "async_redis":  # for an ASGI app, once sessions.py has an async Redis store
        import redis.asyncio

        return sessions.AsyncRedisStore(redis.asyncio.Redis.from_url(redis_url()))
    raise SystemExit(f"unknown store {kind!r}")


def our_store_text() -> str:
    kind = VARIANT.split("_", 1)[1]
    return {"memory": "MemoryStore() per worker process (seeded with the same sessions)",
            "sqlite": "SQLiteStore(path): one file shared by the workers, WAL",
            "redis": f"RedisStore(redis.Redis.from_url({redis_url()!r})), prefix 'sess:'",
            "async_redis": f"AsyncRedisStore(redis.asyncio.Redis.from_url({redis_url()!r}))"}[kind]
