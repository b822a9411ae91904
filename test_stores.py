"""Stores: the conformance suite every store passes (MemoryStore, SQLiteStore, RedisStore), then each
store's own promises, then the operations scenarios with real processes and servers.

Expiry runs on an injected clock. For Redis, whose own clock decides, advancing the test clock also
shortens every key's PTTL by as much (``RedisClock``), which is what time passing looks like to Redis; one
test lets a real TTL run out. Boundaries in the shared suite keep half a second of margin: Redis counts
TTLs in whole seconds (connect-redis's format) and real milliseconds pass between two calls.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import http.server
import json
import os
import re
import select
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote

import pytest
import redis
import redis.cluster
import redis.sentinel
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import sessions
from conftest import AsyncStoreFacade, free_port, require_binary, stop_process
from test_sessions import SECRET, T0, Clock, cookie_header_for, rec

HERE = Path(__file__).resolve().parent


# Stores under test ########################################################################################


class RedisClock(Clock):
    """A test clock for a RedisStore: advancing it also advances Redis's view of time for every key."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(T0)
        self.client = client

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        for key in self.client.scan_iter():
            left_ms = self.client.pttl(key)
            if left_ms >= 0:
                self.client.pexpire(key, max(0, left_ms - round(seconds * 1000)))  # 0 deletes the key


def redis_client_for(server) -> redis.Redis:
    """The client the README recommends: short timeouts, so an outage fails fast."""
    return redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)


@pytest.fixture
def redis_client(redis_server):
    redis_server.flushall()
    client = redis_client_for(redis_server)
    yield client
    client.close()


def redis_client_of(kind, request):
    """A client on an empty Redis of ``kind``: "redis" (one server), "redis-cluster" (``redis.RedisCluster``
    on three primaries) or "redis-sentinel" (``Sentinel.master_for``); short timeouts; closed after the test."""
    if kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        client = redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", port) for port in cluster.ports],
                                    socket_timeout=2, socket_connect_timeout=2)
    elif kind == "redis-sentinel":
        sentinel = request.getfixturevalue("redis_sentinel")
        sentinel.master.flushall()
        client = redis.sentinel.Sentinel([("127.0.0.1", sentinel.port)], socket_timeout=2).master_for(
            sentinel.SERVICE, socket_timeout=2, socket_connect_timeout=2)
    else:
        server = request.getfixturevalue("redis_server")
        server.flushall()
        client = redis_client_for(server)
    request.addfinalizer(client.close)
    return client


def async_redis_client_of(kind, request):
    """The ``redis.asyncio`` twin of ``redis_client_of``'s client (same server, emptied by it), made on the
    tests' ``store_loop`` (Python 3.9 binds asyncio locks to the loop current when they are made), used
    there and closed there after the test."""
    import redis.asyncio as aioredis

    redis_client_of(kind, request)  # starts and empties the server(s)
    if kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")

        def make():
            return aioredis.RedisCluster(startup_nodes=[aioredis.cluster.ClusterNode("127.0.0.1", port)
                                                        for port in cluster.ports],
                                         socket_timeout=2, socket_connect_timeout=2)
    elif kind == "redis-sentinel":
        sentinel = request.getfixturevalue("redis_sentinel")

        def make():
            return aioredis.sentinel.Sentinel([("127.0.0.1", sentinel.port)], socket_timeout=2).master_for(
                sentinel.SERVICE, socket_timeout=2, socket_connect_timeout=2)
    else:
        url = request.getfixturevalue("redis_server").url

        def make():
            return aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    async def made_on_the_loop():
        return make()

    loop = request.getfixturevalue("store_loop")
    client = loop.run(made_on_the_loop())
    request.addfinalizer(lambda: loop.run(client.aclose()))
    return client


def async_redis_store(kind, request, clock=None):
    """An AsyncRedisStore on a Redis of ``kind`` ("redis", "redis-cluster" or "redis-sentinel"), seen through
    the Store contract (its own methods awaited on ``store_loop``), and its test clock (which moves the TTLs
    through a sync client on the same server)."""
    clock = clock or RedisClock(redis_client_of(kind, request))
    store = sessions.AsyncRedisStore(async_redis_client_of(kind, request), clock=clock)
    return AsyncStoreFacade(store, request.getfixturevalue("store_loop")), clock


def readme_stores_snippets():
    """The Python blocks of the README's Stores section, in order."""
    text = (HERE / "README.md").read_text()
    section = text[text.index("\n## Stores\n") : text.index("\n## ", text.index("\n## Stores\n") + 1)]
    return re.findall(r"^```python\n(.*?)^```$", section, re.S | re.M)


def readme_example_store(clock):
    """An instance of the README's example store (``DictStore``)."""
    (snippet,) = [block for block in readme_stores_snippets() if "class DictStore" in block]
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    return namespace["DictStore"](clock=clock)


def psycopg_module():
    """psycopg 3, or a skip: the library suites also run on Pythons whose venv has only pytest, hypothesis
    and redis (.ci/run); requirements-dev.txt installs it for the main run."""
    return pytest.importorskip("psycopg")


def postgres_store(request, driver, clock, **options):
    """A PostgresStore on the test server through ``driver``: "pool" (psycopg_pool), "psycopg" (a connect
    callable), "psycopg2" or "pg8000" (pure Python, no libpq); its table created by the store
    (``create_table=True``)."""
    dsn = request.getfixturevalue("postgres_dsn")
    if driver == "pool":
        connect = request.getfixturevalue("postgres_pool")
    elif driver == "psycopg":
        psycopg = psycopg_module()
        connect = lambda: psycopg.connect(dsn)  # noqa: E731
    elif driver == "psycopg2":
        connect = lambda: pytest.importorskip("psycopg2").connect(dsn)  # noqa: E731
    else:
        pg8000 = pytest.importorskip("pg8000.dbapi")
        port = int(re.search(r"port=(\d+)", dsn).group(1))
        connect = lambda: pg8000.connect(user="postgres", host="127.0.0.1", port=port)  # noqa: E731
    options.setdefault("create_table", True)
    return sessions.PostgresStore(connect, clock=clock, **options)


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster", "redis-sentinel", "postgres-pool",
                        "postgres-psycopg", "postgres-psycopg2", "postgres-pg8000", "async-postgres",
                        "async-redis", "async-redis-cluster", "async-redis-sentinel", "readme-example"])
def store_and_clock(request, tmp_path):
    if request.param.startswith("async-redis"):
        return async_redis_store(request.param[len("async-"):], request)
    if request.param == "async-postgres":
        clock = Clock(T0)
        store = sessions.AsyncPostgresStore(request.getfixturevalue("async_postgres_pool"), clock=clock,
                                            create_table=True)
        return AsyncStoreFacade(store, request.getfixturevalue("store_loop")), clock
    if request.param.startswith("postgres-"):
        clock = Clock(T0)
        return postgres_store(request, request.param[len("postgres-"):], clock), clock
    if request.param == "memory":
        clock = Clock(T0)
        return sessions.MemoryStore(clock=clock), clock
    if request.param == "readme-example":
        clock = Clock(T0)
        return readme_example_store(clock), clock
    if request.param == "sqlite":
        clock = Clock(T0)
        return sessions.SQLiteStore(tmp_path / "sessions.db", clock=clock), clock
    client = redis_client_of(request.param, request)
    clock = RedisClock(client)
    return sessions.RedisStore(client, clock=clock), clock


def text_of(got):
    """The record text of a ``get`` result, whichever form the store returns (CONTRACT decision 1)."""
    return got[0] if isinstance(got, tuple) else got


# 1. Conformance: what every store promises (sessions.Store's contract) ####################################


class TestStoreConformance:
    @pytest.fixture
    def store(self, store_and_clock):
        return store_and_clock[0]

    @pytest.fixture
    def clock(self, store_and_clock):
        return store_and_clock[1]

    def test_get_set_replace_destroy(self, store):
        assert store.get("a") is None
        store.set("a", rec(1), T0 + 60)
        assert text_of(store.get("a")) == rec(1)
        store.set("a", rec(2), T0 + 60)
        assert text_of(store.get("a")) == rec(2)
        store.destroy("a")
        assert store.get("a") is None
        store.destroy("a")  # missing: not an error

    def test_get_reports_when_the_store_drops_the_record(self, store):
        store.set("a", rec(), T0 + 59.5)
        store.set("b", rec(), None)
        got_a, got_b = store.get("a"), store.get("b")
        if isinstance(got_a, str) and type(store) is sessions.MemoryStore:
            pytest.skip("MemoryStore returns (record, expires_at) from branch refactor on")
        assert got_a[0] == rec() and T0 + 59.5 <= got_a[1] <= T0 + 60  # Redis rounds up to whole seconds
        assert got_b[0] == rec() and got_b[1] == pytest.approx(T0 + 86400, abs=1)

    def test_len_ids_clear(self, store):
        for sid in ("a", "b", "c"):
            store.set(sid, rec(sid), T0 + 60)
        store.destroy("b")
        assert len(store) == 2 and sorted(store.ids()) == ["a", "c"]
        store.clear()
        assert len(store) == 0 and store.ids() == [] and store.get("a") is None

    def test_records_expire_at_their_expiry(self, store, clock):
        store.set("a", rec(), T0 + 10)
        clock.advance(9.5)
        assert text_of(store.get("a")) == rec()
        clock.advance(0.5)
        assert store.get("a") is None and len(store) == 0 and store.ids() == []

    def test_browser_session_records_live_default_ttl_after_each_write(self, store, clock):
        store.set("a", rec(), None)
        clock.advance(86400 - 1)
        store.touch("a", rec(), None)
        clock.advance(86400 - 1)
        assert text_of(store.get("a")) == rec()
        clock.advance(1)
        assert store.get("a") is None

    def test_a_record_already_expired_is_not_kept(self, store):
        store.set("a", rec(), T0 + 60)
        store.set("a", rec(), T0)
        assert store.get("a") is None
        store.set("b", rec(), T0 - 1)
        assert store.get("b") is None

    def test_touch_extends_the_expiry(self, store, clock):
        store.set("a", rec(), T0 + 10)
        store.touch("a", rec(), T0 + 100)
        clock.advance(50)
        assert text_of(store.get("a")) == rec()
        clock.advance(50)
        assert store.get("a") is None

    def test_touch_never_replaces_the_stored_data(self, store):
        """Another request wrote "stored" since this one loaded "stale": a touch must not undo that."""
        store.set("a", rec("stored"), T0 + 60)
        store.touch("a", rec("stale"), T0 + 120)
        assert json.loads(text_of(store.get("a")))["v"] == "stored"

    def test_touch_never_creates_a_record(self, store, clock):
        store.touch("missing", rec(), T0 + 60)
        store.set("expired", rec(), T0 + 1)
        clock.advance(1)
        store.touch("expired", rec(), T0 + 60)
        assert store.get("missing") is None and store.get("expired") is None and len(store) == 0

    def test_update_replaces_a_live_record_with_its_change_of_the_stored_text(self, store, clock):
        store.set("a", rec(1), T0 + 10)
        seen = []

        def change(stored):
            seen.append(stored)
            return rec(json.loads(stored)["v"] + 1)

        assert store.update("a", change, T0 + 100) is True
        assert seen[-1] == rec(1) and text_of(store.get("a")) == rec(2)
        clock.advance(50)  # the update moved the expiry, as set does
        assert text_of(store.get("a")) == rec(2)
        clock.advance(50)
        assert store.get("a") is None

    def test_update_never_creates_a_record(self, store, clock):
        """A logout (destroy), a regenerate or an expiry between a request's load and its commit: the
        older request's update must not bring the record back."""
        store.set("destroyed", rec(), T0 + 60)
        store.destroy("destroyed")
        store.set("expired", rec(), T0 + 1)
        clock.advance(1)
        for sid in ("missing", "destroyed", "expired"):
            assert store.update(sid, lambda stored: rec("resurrected"), T0 + 60) is False
        assert len(store) == 0 and store.get("destroyed") is None and store.get("expired") is None

    def test_update_to_an_expiry_already_passed_deletes_the_record(self, store):
        store.set("a", rec(), T0 + 60)
        assert store.update("a", lambda stored: rec(2), T0) is True
        assert store.get("a") is None

    def test_update_of_a_browser_session_record_gets_the_default_ttl(self, store, clock):
        store.set("a", rec(), None)
        clock.advance(86400 - 1)
        assert store.update("a", lambda stored: rec(2), None) is True
        clock.advance(86400 - 1)
        assert text_of(store.get("a")) == rec(2)

    def test_touch_reports_whether_the_record_was_live(self, store, clock):
        store.set("a", rec(), T0 + 10)
        assert store.touch("a", rec(), T0 + 60) is True
        store.set("expired", rec(), T0 + 1)
        clock.advance(1)
        assert store.touch("missing", rec(), T0 + 60) is False
        assert store.touch("expired", rec(), T0 + 60) is False

    def test_updates_from_many_threads_lose_nothing(self, store):
        """8 threads x 25 read-modify-writes of one record: each sees the others' writes (the store's
        lock, SQLite's write transaction, Redis's WATCH/MULTI retried)."""
        store.set("counter", rec(0), T0 + 600)
        errors = []

        def worker():
            try:
                for _ in range(25):
                    assert store.update("counter", lambda stored: rec(json.loads(stored)["v"] + 1), T0 + 600)
            except Exception as exc:  # reported below: an assert in a thread would be lost
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == [] and not any(thread.is_alive() for thread in threads)
        assert json.loads(text_of(store.get("counter")))["v"] == 200

    def test_ids_are_opaque_strings(self, store):
        for sid in ("%", "/foo", "a.b", "*", "[x]", "\u00e9", "x" * 500):
            store.set(sid, rec(sid), T0 + 60)
            assert text_of(store.get(sid)) == rec(sid)
        assert len(store) == 7

    def test_threads_share_the_store(self, store):
        def worker(n):
            for i in range(20):
                store.set(f"{n}-{i}", rec(i), T0 + 60)
                assert json.loads(text_of(store.get(f"{n}-{i}")))["v"] == i

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(store) == 80

    def test_sessions_live_through_the_manager_while_active(self, store, clock):
        """Unmodified requests only touch. With Redis the stored cookie.expires then goes stale (EXPIRE
        does not rewrite it, as in connect-redis): the session lives because the store's TTL decides."""
        manager = sessions.SessionManager(SECRET, store=store, clock=clock, cookie={"max_age": 60})
        session = manager.open(None)
        session["user"] = "ada"
        cookie = manager.commit(session)[0].split(";")[0]
        for _ in range(3):
            clock.advance(50)
            session = manager.open(cookie)
            assert session["user"] == "ada"
            manager.commit(session)
        clock.advance(61)
        assert manager.open(cookie).is_new


class TestPreciseExpiry:
    """Stores that keep expiries to the millisecond (Redis counts whole seconds)."""

    @pytest.fixture(params=["memory", "sqlite"])
    def store(self, request, tmp_path, clock):
        if request.param == "memory":
            return sessions.MemoryStore(clock=clock)
        return sessions.SQLiteStore(tmp_path / "sessions.db", clock=clock)

    @pytest.fixture
    def clock(self):
        return Clock(T0)

    def test_a_record_dies_exactly_at_its_expiry(self, store, clock):
        store.set("a", rec(), T0 + 10)
        clock.advance(9.999)
        assert text_of(store.get("a")) == rec()
        clock.advance(0.001)
        assert store.get("a") is None

    def test_touch_takes_the_new_cookie_object(self, store):
        store.set("a", rec("stored", max_age_ms=1000), T0 + 60)
        store.touch("a", rec("stale", max_age_ms=2000), T0 + 60)
        assert json.loads(text_of(store.get("a"))) == json.loads(rec("stored", max_age_ms=2000))


# 2. The manager side of CONTRACT decision 1 (until branch refactor's version lands) ########################


class TupleStore(sessions.Store):
    """Returns ``(record, expires_at)`` from get, as stores that enforce expiry themselves do."""

    def __init__(self, record, expires_at):
        self.entry = (record, expires_at)

    def get(self, sid):
        return self.entry

    def set(self, sid, record, expires):
        self.entry = (record, expires)


def stale_record(expires_iso):
    return '{"cookie":{"originalMaxAge":60000,"expires":"%s","httpOnly":true,"path":"/"},"n":1}' % expires_iso


def test_a_store_returning_expires_at_is_the_authority_on_expiry():
    """connect-redis touches with EXPIRE only: the record's cookie.expires is stale, the store's TTL is not."""
    clock = Clock(T0)
    store = TupleStore(stale_record("2023-11-14T22:00:00.000Z"), T0 + 30)  # the record says: expired
    manager = sessions.SessionManager(SECRET, store=store, clock=clock, cookie={"max_age": 60})
    session = manager.open(cookie_header_for("apple"))
    assert not session.is_new and session["n"] == 1
    assert session.cookie.max_age == 30


def test_a_store_returning_no_deadline_keeps_the_record_s_expiry():
    clock = Clock(T0)
    store = TupleStore(stale_record("2023-11-14T22:13:50.000Z"), None)
    manager = sessions.SessionManager(SECRET, store=store, clock=clock, cookie={"max_age": 60})
    assert manager.open(cookie_header_for("apple")).cookie.max_age == 30


# 3. The redis-server fixture; RedisStore: connect-redis 9's format, Redis's TTL as the authority #######


@pytest.mark.parametrize("ci, outcome", [("1", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_binary_fails_under_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="not installed"):
        require_binary("no-such-binary-for-sessions-tests")


def test_redis_server_fixture_stops_and_starts_on_the_same_port(redis_server, redis_client):
    redis_client.set("k", "v")
    with redis_server.stopped():
        assert not redis_server.running
        with pytest.raises(redis.ConnectionError):
            redis_client.get("k")
    assert redis_client.ping() and redis_client.get("k") is None  # no persistence


def test_redis_store_writes_exactly_what_connect_redis_writes(redis_client):
    store = sessions.RedisStore(redis_client, clock=Clock(T0))
    store.set("apple", rec(1), T0 + 59.2)  # ttl = ceil(expires - now), as Math.ceil in connect-redis
    assert redis_client.get("sess:apple") == rec(1).encode()
    assert redis_client.ttl("sess:apple") == 60
    store.set("pear", rec(2), None)  # no expiry: the default ttl, one day
    assert redis_client.ttl("sess:pear") == 86400
    assert sorted(redis_client.scan_iter()) == [b"sess:apple", b"sess:pear"]


def test_redis_store_touch_is_expire_only(redis_client):
    store = sessions.RedisStore(redis_client, clock=Clock(T0))
    store.set("apple", rec("stored", max_age_ms=1000), T0 + 10)
    store.touch("apple", rec("fresh", max_age_ms=2000), T0 + 100)
    assert redis_client.get("sess:apple") == rec("stored", max_age_ms=1000).encode()  # not rewritten
    assert redis_client.ttl("sess:apple") == 100
    store.touch("apple", rec(), T0)  # a ttl of zero: EXPIRE deletes the key
    assert redis_client.exists("sess:apple") == 0


def test_redis_store_update_writes_exactly_what_set_writes(redis_client):
    store = sessions.RedisStore(redis_client, clock=Clock(T0))
    store.set("apple", rec(1), T0 + 10)
    assert store.update("apple", lambda stored: rec(2), T0 + 59.2) is True
    assert redis_client.get("sess:apple") == rec(2).encode() and redis_client.ttl("sess:apple") == 60
    redis_client.set("sess:empty", "")  # empty: missing, as in connect-redis
    assert store.update("empty", lambda stored: rec(), T0 + 60) is False and redis_client.get("sess:empty") == b""


def test_redis_store_update_retries_with_the_newer_value_when_another_client_wrote(redis_client):
    """WATCH/MULTI: a write between our GET and our EXEC makes Redis refuse the EXEC; the change runs
    again on the value the other client wrote, which is kept."""
    store = sessions.RedisStore(redis_client, clock=Clock(T0))
    store.set("a", rec("first"), T0 + 60)
    seen = []

    def change(stored):
        seen.append(json.loads(stored)["v"])
        if len(seen) == 1:
            redis_client.set("sess:a", rec("other"))  # another client, in between
        return rec(seen[-1] + "+mine")

    assert store.update("a", change, T0 + 60) is True
    assert seen == ["first", "other"] and json.loads(redis_client.get("sess:a"))["v"] == "other+mine"


def test_redis_store_update_that_keeps_conflicting_is_a_store_error(redis_client, monkeypatch):
    monkeypatch.setattr(sessions.RedisStore, "UPDATE_BACKOFF", 0.0)
    store = sessions.RedisStore(redis_client, clock=Clock(T0))
    sid = "secret-session-id"
    store.set(sid, rec(0), T0 + 60)
    calls = []

    def change(stored):
        calls.append(stored)
        redis_client.set("sess:" + sid, rec(len(calls)))  # always someone faster
        return rec("mine")

    with pytest.raises(sessions.StoreError, match="kept changing") as info:
        store.update(sid, change, T0 + 60)
    assert len(calls) == store.UPDATE_ATTEMPTS and sid not in str(info.value)
    assert json.loads(redis_client.get("sess:" + sid))["v"] == store.UPDATE_ATTEMPTS


def test_redis_store_writes_an_unchanged_session_in_one_script_call(redis_client):
    """No concurrent write (the usual case): one EVALSHA writes the record, no WATCH round trips; the
    value and TTL are what set writes."""
    clock = Clock(T0)
    manager = sessions.SessionManager(SECRET, store=sessions.RedisStore(redis_client, clock=clock), clock=clock,
                                      cookie={"max_age": 60})
    first = manager.open(None)
    first["n"] = 1
    cookie = manager.commit(first)[0].split(";")[0]
    for n in (2, 3):  # the first call also loads the script into Redis
        session = manager.open(cookie)
        session["n"] = n
        redis_client.config_resetstat()
        manager.commit(session)
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1 and "cmdstat_watch" not in stats and "cmdstat_multi" not in stats
    assert redis_client.get("sess:" + first.id) == manager._record(session, '{"n":3}').encode()
    assert redis_client.ttl("sess:" + first.id) == 60


@pytest.mark.parametrize("stored, tail", [
    ('{"cookie":{"path":"/"},"a":1}', ',"a":1}'),
    ('{"cookie":{"path":"/"},"b":2,"a":1}', ',"a":1}'),  # another key written meanwhile
    ('{"cookie":{"p":"a\\"},"a":1}', ',"a":1}'),  # an escape in the cookie object
    ('{"cookie":{"p":{"x":1}},"a":1}', ',"a":1}'),  # a nested object
    ('{"cookie":{"p":"}"},"a":1}', ',"a":1}'),  # a brace inside a string
    ('{"cookie":{"p":"/\u00e9"},"n":"\u00e9\U0001f600"}', ',"n":"\u00e9\U0001f600"}'),
    ('{"cookie":{"path":"/"}}', "}"),
    ('{"cookie":{}}', "}"),
    ('{"cookie":{"path":"/"},"a":1}', "}"),
    ("not json", "}"),
    ('"a":1}', ',"a":1}'),
])
def test_redis_script_decides_like_the_python_check(redis_client, stored, tail):
    """The script in Redis and ``_Merge`` in Python take the fast path for exactly the same texts."""
    store = sessions.RedisStore(redis_client, clock=Clock(T0))
    redis_client.set("sess:a", stored.encode())
    python_fast = sessions._Merge("new", tail, lambda text: "merged")(stored) == "new"
    assert store._set_if_unchanged(keys=["sess:a"], args=[tail, "new", 60]) == (1 if python_fast else 2)
    assert redis_client.get("sess:a") == ("new" if python_fast else stored).encode()


def test_redis_store_reads_keys_written_without_ttl_and_ignores_empty_values(redis_client):
    store = sessions.RedisStore(redis_client, clock=Clock(T0))
    redis_client.set("sess:forever", rec())  # connect-redis with disableTTL: true
    redis_client.set("sess:empty", "")
    assert store.get("forever") == (rec(), None)
    assert store.get("empty") is None


@pytest.mark.parametrize("decode_responses", [False, True])
def test_redis_store_works_with_and_without_decode_responses(redis_server, redis_client, decode_responses):
    client = redis.Redis.from_url(redis_server.url, decode_responses=decode_responses, socket_timeout=1)
    store = sessions.RedisStore(client, prefix="app:\u00e9:")
    store.set("\u00e9t\u00e9", rec("\u00e9"), None)
    assert text_of(store.get("\u00e9t\u00e9")) == rec("\u00e9")
    assert store.ids() == ["\u00e9t\u00e9"]
    client.close()


def test_redis_store_lists_and_clears_only_its_prefix_even_with_glob_characters(redis_client):
    mine = sessions.RedisStore(redis_client, prefix="a*[b]?:")
    others = sessions.RedisStore(redis_client, prefix="a-[b]-:")
    redis_client.set("unrelated", "keep")
    for i in range(250):  # several SCAN batches
        mine.set(f"s{i}", rec(i), None)
    others.set("s1", rec(), None)
    assert len(mine) == 250 and sorted(mine.ids()) == sorted(f"s{i}" for i in range(250))
    mine.clear()
    assert len(mine) == 0 and len(others) == 1 and redis_client.get("unrelated") == b"keep"


def test_redis_store_uses_scan_never_keys(redis_client):
    store = sessions.RedisStore(redis_client)
    store.set("a", rec(), None)
    redis_client.config_resetstat()
    store.ids(), len(store), store.clear()
    stats = redis_client.info("commandstats")
    assert "cmdstat_scan" in stats and "cmdstat_keys" not in stats


def test_redis_store_get_reads_the_ttl_with_the_value_in_one_pipeline(redis_client):
    calls = []

    class Recording:
        """Forwards to the real client, recording which commands go outside a pipeline."""

        def __getattr__(self, name):
            calls.append(name)
            return getattr(redis_client, name)

    store = sessions.RedisStore(Recording(), clock=Clock(T0))
    store.set("a", rec(), T0 + 30)
    calls.clear()
    assert store.get("a") == (rec(), pytest.approx(T0 + 30, abs=0.5))
    assert calls == ["pipeline"]


def test_redis_expiry_is_enforced_by_redis_itself(redis_client):
    store = sessions.RedisStore(redis_client)
    store.set("a", rec(), time.time() + 0.5)  # rounded up: one second
    deadline = time.monotonic() + 5
    while store.get("a") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get("a") is None


def test_redis_client_errors_are_store_errors_without_the_session_id():
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1, socket_timeout=1)
    store = sessions.RedisStore(client)
    sid = "secret-session-id"
    calls = [lambda: store.get(sid), lambda: store.set(sid, rec(), None), lambda: store.touch(sid, rec(), None),
             lambda: store.update(sid, lambda stored: stored, None),
             lambda: store.destroy(sid), store.clear, store.ids, lambda: len(store)]
    for call in calls:
        with pytest.raises(sessions.StoreError) as info:
            call()
        assert isinstance(info.value.original, redis.ConnectionError)
        assert sid not in str(info.value) and "sess:" not in str(info.value)


@pytest.mark.parametrize("options, word", [
    (dict(client=object()), "client"),
    (dict(prefix=b"sess:"), "prefix"),
    (dict(scan_count=0), "scan_count"),
    (dict(default_ttl=0), "default_ttl"),
])
def test_redis_store_options_are_checked_at_construction(redis_client, options, word):
    options.setdefault("client", redis_client)
    with pytest.raises(sessions.ConfigurationError, match=word):
        sessions.RedisStore(options.pop("client"), **options)


def test_redis_cluster_ids_len_and_clear_reach_every_primary(request):
    """Keys spread over the three primaries' slots: SCAN runs on each (redis-py's scan_iter on a cluster)."""
    client = redis_client_of("redis-cluster", request)
    cluster = request.getfixturevalue("redis_cluster")
    store = sessions.RedisStore(client, scan_count=10)
    sids = [f"s{n}" for n in range(60)]
    for sid in sids:
        store.set(sid, rec(sid), time.time() + 60)
    per_node = [redis.Redis(port=port).dbsize() for port in cluster.ports]
    assert all(count > 0 for count in per_node) and sum(per_node) == 60
    assert sorted(store.ids()) == sorted(sids) and len(store) == 60
    store.clear()
    assert len(store) == 0 and [redis.Redis(port=port).dbsize() for port in cluster.ports] == [0, 0, 0]


@pytest.mark.parametrize("kind", ["redis-cluster", "redis-sentinel"])
def test_redis_script_flushed_from_the_servers_is_loaded_again(request, kind):
    """A loaded session's write runs its script by EVALSHA; after SCRIPT FLUSH (a restart, a failover to a
    node that never saw it) redis-py loads it again on NOSCRIPT, on every primary of a cluster."""
    client = redis_client_of(kind, request)
    manager = sessions.SessionManager(SECRET, store=sessions.RedisStore(client))
    session = manager.open(None)
    session["n"] = 1
    cookie = manager.commit(session)[0].split(";")[0]
    sha = hashlib.sha1(sessions._SET_IF_UNCHANGED.encode()).hexdigest()
    for n in (2, 3):
        client.script_flush()
        assert not any(client.script_exists(sha))
        session = manager.open(cookie)
        session["n"] = n
        manager.commit(session)
        assert manager.open(cookie)["n"] == n
        assert all(client.script_exists(sha))  # the write ran the script: it is loaded again


# 4. SQLiteStore: the file, its schema, its errors ##########################################################


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "sessions.db"


def test_sqlite_schema_is_versioned_and_inspectable(db_path):
    store = sessions.SQLiteStore(db_path, timeout=2.5)
    store.set("a", rec(), None)
    connection = store._connection()
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == sessions.SQLiteStore.SCHEMA_VERSION == 2
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [(row[1], row[2], row[3]) for row in db.execute("PRAGMA table_info(sessions)")]
        assert columns == [("id", "TEXT", 0), ("record", "TEXT", 1), ("expires_at", "REAL", 1), ("owner", "TEXT", 0)]
        assert db.execute("SELECT id, record FROM sessions").fetchall() == [("a", rec())]
        plan = db.execute("EXPLAIN QUERY PLAN SELECT rowid FROM sessions WHERE expires_at <= 1 "
                          "ORDER BY expires_at LIMIT 64").fetchall()
        assert "sessions_expires_at" in str(plan)


def test_sqlite_store_reopens_its_file_and_keeps_other_tables_apart(db_path):
    clock = Clock(T0)
    sessions.SQLiteStore(db_path, clock=clock).set("a", rec(1), T0 + 60)
    other = sessions.SQLiteStore(db_path, table="admin_sessions", clock=clock)
    other.set("a", rec(2), T0 + 60)
    assert text_of(sessions.SQLiteStore(db_path, clock=clock).get("a")) == rec(1)
    assert text_of(other.get("a")) == rec(2)


def test_sqlite_relative_path_names_the_same_file_after_a_chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = sessions.SQLiteStore("sessions.db")
    store.set("a", rec(), None)
    monkeypatch.chdir(tmp_path.parent)
    found = []
    thread = threading.Thread(target=lambda: found.append(text_of(store.get("a"))))  # a new connection
    thread.start()
    thread.join(timeout=30)
    assert found == [rec()] and store.path == str(tmp_path / "sessions.db")


def test_sqlite_writes_prune_expired_rows_in_small_batches(db_path):
    clock = Clock(T0)
    store = sessions.SQLiteStore(db_path, clock=clock)
    for i in range(200):
        store.set(f"dead{i}", rec(), T0 + 1 + i / 1000)
    store.set("live", rec(), T0 + 1000)
    clock.advance(10)

    def rows():
        with sqlite3.connect(db_path) as db:
            return db.execute("SELECT count(*) FROM sessions").fetchone()[0]

    store.set("new", rec(), T0 + 1000)
    assert rows() == 202 - store.PRUNE_BATCH
    store.touch("live", rec(), T0 + 1000)
    assert rows() == 202 - 2 * store.PRUNE_BATCH
    assert store.prune() == 200 - 2 * store.PRUNE_BATCH and rows() == 2 and len(store) == 2


def _not_a_database(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database " * 100)
    return path


def _newer_schema(tmp_path):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {sessions.SQLiteStore.SCHEMA_VERSION + 1}")
    return path


@pytest.mark.parametrize("make_path, options, words", [
    (lambda tmp: tmp / "missing" / "sessions.db", {}, "unable to open"),
    (lambda tmp: tmp, {}, "unable to open"),
    (_not_a_database, {}, "not a database"),
    (_newer_schema, {}, "schema version 3"),
    (lambda tmp: ":memory:", {}, "MemoryStore"),
    (lambda tmp: tmp / "s.db", {"table": "sessions; DROP TABLE x"}, "table"),
    (lambda tmp: tmp / "s.db", {"default_ttl": -1}, "default_ttl"),
    (lambda tmp: tmp / "s.db", {"timeout": "5"}, "timeout"),
    (lambda tmp: tmp / "s.db", {"timeout": None}, "timeout"),
], ids=["missing-directory", "a-directory", "not-a-database", "newer-schema", "memory", "table", "ttl", "timeout",
        "no-timeout"])
def test_sqlite_store_that_cannot_work_fails_at_construction(tmp_path, make_path, options, words):
    with pytest.raises(sessions.ConfigurationError, match=words) as info:
        sessions.SQLiteStore(make_path(tmp_path), **options)
    assert isinstance(info.value, sessions.SessionError)


def test_sqlite_older_than_upsert_is_refused_at_construction(db_path, monkeypatch):
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 23, 1))
    with pytest.raises(sessions.ConfigurationError, match="3.24"):
        sessions.SQLiteStore(db_path)


def test_sqlite_failures_later_are_store_errors_without_the_session_id(db_path):
    store = sessions.SQLiteStore(db_path)
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TABLE sessions")
    sid = "secret-session-id"
    for call in (lambda: store.get(sid), lambda: store.set(sid, rec(), None),
                 lambda: store.touch(sid, rec(), None), lambda: store.update(sid, lambda stored: stored, None),
                 lambda: store.destroy(sid), store.prune, store.ids):
        with pytest.raises(sessions.StoreError) as info:
            call()
        assert isinstance(info.value.original, sqlite3.Error) and sid not in str(info.value)


def test_sqlite_writer_blocked_past_the_timeout_is_a_store_error_and_readers_go_on(db_path):
    store = sessions.SQLiteStore(db_path, timeout=0.05)
    store.set("a", rec(), None)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        assert text_of(store.get("a")) == rec()  # WAL: readers are not blocked by the writer
        with pytest.raises(sessions.StoreError, match="save"):
            store.set("b", rec(), None)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.set("b", rec(), None)
    assert len(store) == 2


class _FailingConnection:
    """This thread's real connection, but the statements named in ``fail`` raise before they reach it (a
    COMMIT that finds the disk full, a ROLLBACK that cannot)."""

    def __init__(self, db: sqlite3.Connection, *fail: str) -> None:
        self.db, self.fail = db, set(fail)

    def execute(self, sql, *args):
        if sql in self.fail:
            raise sqlite3.OperationalError(f"{sql} failed (injected)")
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


@pytest.mark.parametrize("fail", [("COMMIT",), ("COMMIT", "ROLLBACK")], ids=["commit", "commit-and-rollback"])
def test_sqlite_a_failed_commit_leaves_the_thread_a_working_connection(db_path, monkeypatch, fail):
    store = sessions.SQLiteStore(db_path)
    store.set("a", rec(1), None)
    real = store._connection()
    with monkeypatch.context() as patch:
        patch.setattr(store, "_connection", lambda: _FailingConnection(real, *fail))
        with pytest.raises(sessions.StoreError):
            store.set("a", rec(2), None)
    store.set("a", rec(3), None)  # left inside its transaction, the connection could not BEGIN again
    assert text_of(store.get("a")) == rec(3)
    other = sessions.SQLiteStore(db_path, timeout=0.2)
    other.set("b", rec(), None)  # and no write lock was left held
    assert len(other) == 2


FORKING_PROCESS = """
import os, sys, time
import sessions
kind, where, record = sys.argv[1:]
if kind == "sqlite":
    store = sessions.SQLiteStore(where)
else:
    import psycopg
    store = sessions.PostgresStore(lambda: psycopg.connect(where))
store.set("parent", record, None)  # this thread now holds a connection
pid = os.fork()
if pid == 0:  # the child: exit status 0 only if its store works, on a connection of its own
    code = 1
    try:
        got = store.get("parent")
        store.set("child", got[0] if isinstance(got, tuple) else got, None)
        code = 0
    finally:
        os._exit(code)
deadline = time.monotonic() + 30
done, status = os.waitpid(pid, os.WNOHANG)
while not done:
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        sys.exit("the forked child did not finish")
    time.sleep(0.01)
    done, status = os.waitpid(pid, os.WNOHANG)
store.set("parent-again", record, None)  # the child neither used nor closed this process's connection
sys.exit("the forked child's store failed" if status else 0)
"""


def fork_a_store(kind: str, where: str) -> None:
    """Run FORKING_PROCESS in a Python of its own, whose fork() copies its one thread. Forked from the
    test process instead, which earlier tests may have left with threads, the child could inherit a lock
    another thread held and wait forever (Python 3.12 warns of it)."""
    done = subprocess.run([sys.executable, "-c", FORKING_PROCESS, kind, where, rec()], cwd=HERE,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@needs_fork
def test_sqlite_store_opens_a_new_connection_after_fork(db_path):
    fork_a_store("sqlite", str(db_path))
    store = sessions.SQLiteStore(db_path)
    assert sorted(store.ids()) == ["child", "parent", "parent-again"]
    assert text_of(store.get("child")) == rec()


class SQLiteStoreModel(RuleBasedStateMachine):
    """Two SQLiteStores on one file (as two processes would have) against a dict model: expiry to the
    millisecond, the default TTL, touch keeping the data, batch pruning on writes and prune()."""

    ids = st.sampled_from(["a", "b", "c", "d", "e"])
    which = st.integers(0, 1)

    def __init__(self):
        super().__init__()
        self.clock = Clock(T0)
        self.directory = tempfile.mkdtemp()
        path = os.path.join(self.directory, "sessions.db")
        self.stores = [sessions.SQLiteStore(path, clock=self.clock, default_ttl=30) for _ in range(2)]
        self.model = {}  # sid -> ((cookie tag, data tag), deadline)
        self.tick = 0

    def teardown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def _live(self):
        return {sid: entry for sid, entry in self.model.items() if entry[1] > self.clock.now}

    @rule(which=which, sid=ids, ttl=st.none() | st.integers(-5, 60), touch=st.booleans())
    def write(self, which, sid, ttl, touch):
        self.tick += 1
        expires = None if ttl is None else self.clock.now + ttl / 8
        deadline = self.clock.now + 30 if expires is None else expires
        store = self.stores[which]
        (store.touch if touch else store.set)(sid, rec(self.tick, self.tick), expires)
        live = self._live()
        if touch and sid in live:
            self.model[sid] = ((self.tick, live[sid][0][1]), deadline)
        elif not touch:
            self.model[sid] = ((self.tick, self.tick), deadline)

    @rule(which=which, sid=ids)
    def destroy(self, which, sid):
        self.stores[which].destroy(sid)
        self.model.pop(sid, None)

    @rule(ms=st.integers(0, 10_000))
    def advance(self, ms):
        self.clock.advance(ms / 1000)

    @rule(which=which)
    def prune(self, which):
        assert self.stores[which].prune() <= len(self.model) - len(self._live())
        self.model = self._live()

    @invariant()
    def agrees(self):
        live = self._live()
        for store in self.stores:
            for sid in "abcde":
                entry, got = live.get(sid), store.get(sid)
                if entry is None:
                    assert got is None, sid
                else:
                    assert json.loads(got[0]) == json.loads(rec(entry[0][1], entry[0][0])), sid
                    assert got[1] == pytest.approx(entry[1]), sid
            assert sorted(store.ids()) == sorted(live) and len(store) == len(live)


TestSQLiteStoreModel = SQLiteStoreModel.TestCase
TestSQLiteStoreModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


# 4b. PostgresStore: connect-pg-simple 10's table and SQL, time zones, failures ############################


def pg_rows(dsn, sql, params=(), *, time_zone=None):
    """Rows of ``sql`` on a fresh psycopg connection (under ``time_zone`` if given)."""
    options = {} if time_zone is None else {"options": f"-c TimeZone={time_zone}"}
    with psycopg_module().connect(dsn, autocommit=True, **options) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


def test_postgres_table_is_connect_pg_simple_s(request):
    store = postgres_store(request, "psycopg", Clock(T0))
    assert len(store) == 0  # the first call creates the table
    dsn = request.getfixturevalue("postgres_dsn")
    columns = pg_rows(dsn, "SELECT column_name, data_type, datetime_precision, is_nullable FROM"
                           " information_schema.columns WHERE table_name = 'session' ORDER BY ordinal_position")
    assert columns == [("sid", "character varying", None, "NO"), ("sess", "json", None, "NO"),
                       ("expire", "timestamp without time zone", 6, "NO"),
                       ("owner", "character varying", None, "YES")]  # the owner index's, added after table.sql
    indexes = pg_rows(dsn, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'session' ORDER BY 1")
    assert [name for name, _ in indexes] == ["IDX_session_expire", "IDX_session_owner", "session_pkey"]
    assert "(expire)" in indexes[0][1] and "(owner)" in indexes[1][1]
    assert "UNIQUE" in indexes[2][1] and "(sid)" in indexes[2][1]


def test_postgres_store_writes_exactly_what_connect_pg_simple_writes(request):
    """``sess`` is the record's text byte for byte (json keeps it, escapes, spacing and duplicate keys
    included); ``expire`` is to_timestamp(ceil(expires)), or ceil(now + ttl) without an expiry."""
    store = postgres_store(request, "pool", Clock(T0 + 0.25), default_ttl=7200)
    odd = '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"u":"\u00e5\\u0000\u2028", "u":1}'
    store.set("a", rec("\u00e5lice \"q\""), T0 + 59.2)
    store.set("b", odd, None)
    rows = pg_rows(request.getfixturevalue("postgres_dsn"),
                   "SELECT sid, sess::text, extract(epoch FROM expire)::float8 FROM session ORDER BY sid")
    assert rows == [("a", rec("\u00e5lice \"q\""), T0 + 60), ("b", odd, T0 + 7201)]
    assert store.get("b") == (odd, T0 + 7201)


def test_postgres_store_touch_moves_expire_only(request):
    clock = Clock(T0)
    store = postgres_store(request, "psycopg", clock)
    store.set("a", rec("stored", max_age_ms=1000), T0 + 60)
    assert store.touch("a", rec("other", max_age_ms=2000), T0 + 119.5) is True
    assert store.get("a") == (rec("stored", max_age_ms=1000), T0 + 120)


def test_postgres_store_reads_rows_node_wrote_with_its_own_statements(request):
    """A row written by connect-pg-simple's own INSERT (its ``$1`` reused; here ``%s`` twice) is read back
    byte for byte; an expired one is missing, as connect-pg-simple's get has it."""
    clock = Clock(T0)
    store = postgres_store(request, "psycopg", clock)
    assert store.ids() == []
    insert = ("INSERT INTO \"session\" (sess, expire, sid) SELECT %s, to_timestamp(%s), %s ON CONFLICT (sid)"
              " DO UPDATE SET sess=%s, expire=to_timestamp(%s) RETURNING sid")
    dsn = request.getfixturevalue("postgres_dsn")
    for sid, expire in (("live", T0 + 30), ("dead", T0 - 1)):
        pg_rows(dsn, insert, (rec(sid), int(expire), sid, rec(sid), int(expire)))
    assert store.get("live") == (rec("live"), T0 + 30) and store.get("dead") is None
    assert store.ids() == ["live"] and store.prune() == 1


def test_postgres_writes_prune_expired_rows_in_batches(request, monkeypatch):
    """A write deletes a batch of expired rows when PRUNE_INTERVAL has passed since the last batch, or at
    once after a full batch (a backlog goes in batches, one per write)."""
    monkeypatch.setattr(sessions.PostgresStore, "PRUNE_BATCH", 5)
    monkeypatch.setattr(sessions.PostgresStore, "PRUNE_INTERVAL", 4)
    clock = Clock(T0)
    store = postgres_store(request, "psycopg", clock)
    dsn = request.getfixturevalue("postgres_dsn")
    rows = lambda: pg_rows(dsn, "SELECT count(*) FROM session")[0][0]  # noqa: E731
    for n in range(12):
        store.set(f"old{n}", rec(), T0 + 10)
    clock.advance(20)
    store.set("new1", rec(), T0 + 100)  # due: 5 deleted, a full batch, so the next write prunes too
    assert rows() == 7 + 1
    store.set("new2", rec(), T0 + 100)  # 5 more
    store.set("new3", rec(), T0 + 100)  # the last 2: not a full batch
    assert rows() == 0 + 3
    store.set("short", rec(), T0 + 21)
    clock.advance(2)
    store.set("new4", rec(), T0 + 100)  # "short" has expired, but the next batch is not due yet
    assert rows() == 5 and len(store) == 4
    clock.advance(2)
    store.set("new5", rec(), T0 + 100)
    assert rows() == 5 and len(store) == 5


def test_postgres_time_zone_is_the_connection_s_as_in_connect_pg_simple(request):
    """The trap of a ``timestamp`` without time zone: two stores whose connections run under different
    TimeZone settings. Each one alone expires rows correctly, and writes the wall clock of its zone (what
    connect-pg-simple writes on such a connection); across the two, a row is off by the zones' offset. So
    every app on the table must connect with one TimeZone (README: Stores, PostgreSQL)."""
    psycopg = psycopg_module()
    dsn = request.getfixturevalue("postgres_dsn")
    clock = Clock(T0)
    stores = {zone: sessions.PostgresStore(lambda zone=zone: psycopg.connect(dsn, options=f"-c TimeZone={zone}"),
                                           create_table=True, clock=clock)
              for zone in ("Asia/Tokyo", "UTC")}  # Tokyo writes first: its pruning would delete UTC's row
    for zone, store in stores.items():
        store.set(zone, rec(zone), T0 + 3600)
        assert store.get(zone) == (rec(zone), T0 + 3600)
    walls = dict(pg_rows(dsn, "SELECT sid, expire::text FROM session"))
    assert walls == {"UTC": "2023-11-14 23:13:20", "Asia/Tokyo": "2023-11-15 08:13:20"}  # Tokyo: UTC+9
    # Tokyo's row read under UTC: it seems to expire 9 hours late; UTC's row read under Tokyo: 9 hours
    # early, so already dead to a session living an hour.
    assert stores["UTC"].get("Asia/Tokyo") == (rec("Asia/Tokyo"), T0 + 3600 + 9 * 3600)
    assert stores["Asia/Tokyo"].get("UTC") is None
    clock.advance(sessions.PostgresStore.PRUNE_INTERVAL)  # Tokyo's next write prunes: UTC's live row goes
    stores["Asia/Tokyo"].set("later", rec(), T0 + 3600)
    assert stores["UTC"].get("UTC") is None and stores["UTC"].get("Asia/Tokyo") is not None


def test_postgres_store_works_on_connections_in_autocommit_mode(request):
    """A pool or callable handing out autocommit connections still gets one transaction per call (an
    explicit BEGIN), so update's FOR UPDATE holds the row until its UPDATE."""
    psycopg = psycopg_module()
    dsn = request.getfixturevalue("postgres_dsn")
    store = sessions.PostgresStore(lambda: psycopg.connect(dsn, autocommit=True), create_table=True, clock=Clock(T0))
    store.set("counter", rec(0), T0 + 600)

    def worker():
        for _ in range(20):
            store.update("counter", lambda stored: rec(json.loads(stored)["v"] + 1), T0 + 600)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert json.loads(text_of(store.get("counter")))["v"] == 80


def test_postgres_schema_and_quoted_table_names(request):
    """``schema`` and ``table`` are quoted as connect-pg-simple quotes them (``"`` doubled)."""
    psycopg = psycopg_module()
    dsn = request.getfixturevalue("postgres_dsn")
    pg_rows(dsn, 'DROP SCHEMA IF EXISTS "app ""x""" CASCADE')
    pg_rows(dsn, 'CREATE SCHEMA "app ""x"""')
    store = sessions.PostgresStore(lambda: psycopg.connect(dsn), schema='app "x"', table='my "sessions"',
                                   create_table=True, clock=Clock(T0))
    store.set("a", rec(), T0 + 60)
    assert pg_rows(dsn, 'SELECT sid FROM "app ""x"""."my ""sessions"""') == [("a",)]
    assert store.ids() == ["a"]
    pg_rows(dsn, 'DROP SCHEMA "app ""x""" CASCADE')


def test_postgres_errors_are_store_errors_without_the_session_id(request):
    psycopg = psycopg_module()
    dsn = f"host=127.0.0.1 port={free_port()} user=postgres dbname=postgres connect_timeout=1"
    sid = "secret-session-id"
    for store in (sessions.PostgresStore(lambda: psycopg.connect(dsn)),
                  postgres_store(request, "psycopg", Clock(T0), table="missing table", create_table=False)):
        calls = [lambda: store.get(sid), lambda: store.set(sid, rec(), None), lambda: store.touch(sid, rec(), None),
                 lambda: store.update(sid, lambda stored: stored, None), lambda: store.destroy(sid),
                 store.clear, store.ids, lambda: len(store), store.prune]
        for call in calls:
            with pytest.raises(sessions.StoreError) as info:
                call()
            assert isinstance(info.value.original, psycopg.Error)
            assert sid not in str(info.value) and "PostgreSQL" in str(info.value)


def test_postgres_a_failed_update_writes_nothing(request):
    store = postgres_store(request, "pool", Clock(T0))
    store.set("a", rec(1), T0 + 60)

    def change(stored):
        raise sessions.SerializationError("cannot encode")

    with pytest.raises(sessions.SessionError):
        store.update("a", change, T0 + 600)
    assert store.get("a") == (rec(1), T0 + 60) and store.update("a", lambda stored: rec(2), T0 + 60) is True


@pytest.mark.parametrize("options, word", [
    (dict(connect=object()), "connect"),
    (dict(table=""), "table"),
    (dict(schema=b"x"), "schema"),
    (dict(default_ttl=0), "default_ttl"),
])
def test_postgres_store_options_are_checked_at_construction(options, word):
    with pytest.raises(sessions.ConfigurationError, match=word):
        sessions.PostgresStore(options.pop("connect", lambda: None), **options)


@needs_fork
def test_postgres_store_opens_its_own_connections_after_fork(request):
    """A forked child must not use (nor close) the parent's connection: it opens its own, and the parent's
    keeps working afterwards."""
    store = postgres_store(request, "psycopg", Clock(T0))
    assert len(store) == 0  # its first use creates the table
    fork_a_store("postgres", request.getfixturevalue("postgres_dsn"))
    assert sorted(store.ids()) == ["child", "parent", "parent-again"]
    assert text_of(store.get("child")) == rec()


# 5. Operations: several processes, a restart, a Redis outage (real processes and servers) #################


class Process:
    """A Python child process that answers one JSON line per JSON line it is sent; stopped by its PID."""

    def __init__(self, script: str, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", script, str(HERE), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def read_line(self, timeout: float = 30) -> str:
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"no answer from process {self.popen.pid} in {timeout} s")
        line = self.popen.stdout.readline()
        if not line:
            raise AssertionError(f"process {self.popen.pid} ended (exit status {self.popen.wait(5)})")
        return line

    def call(self, *command):
        self.popen.stdin.write(json.dumps(command) + "\n")
        return json.loads(self.read_line())

    def stop(self) -> None:
        """SIGTERM to its PID (SIGKILL after a bounded wait), then close the pipes."""
        stop_process(self.popen)


@pytest.fixture
def processes():
    started = []

    def start(script, *args):
        started.append(Process(script, *args))
        return started[-1]

    yield start
    for process in started:
        process.stop()


#: A process with its own SQLiteStore on a shared file; its clock can run ahead of real time.
SQLITE_WORKER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import sessions
ahead = 0.0
store = sessions.SQLiteStore(sys.argv[2], clock=lambda: time.time() + ahead)
for line in sys.stdin:
    op, *args = json.loads(line)
    if op == "advance":
        ahead += args[0]
        answer = None
    elif op == "set":
        answer = store.set(args[0], args[1], time.time() + ahead + args[2])
    elif op == "get":
        got = store.get(args[0])
        answer = got and got[0]
    elif op == "write_many":
        for i in range(args[1]):
            store.set(f"{args[0]}{i}", args[0], None)
        answer = len(store)
    elif op == "increment":  # args: sid, times; each an update of the record "<number>"
        answer = [store.update(args[0], lambda record: str(int(record) + 1), None) for _ in range(args[1])]
    else:
        answer = getattr(store, op)()
    print(json.dumps(answer), flush=True)
"""


def test_workers_starting_together_on_a_new_file_all_open_it(tmp_path):
    """SQLite answers "database is locked" at once, without its busy handler, to a connection switching a
    file to WAL while another does (every gunicorn worker makes its store at start-up)."""
    failures = []
    for attempt in range(40):
        path = str(tmp_path / f"new-{attempt}.db")
        start = threading.Barrier(4)

        def open_store() -> None:
            start.wait()
            try:
                sessions.SQLiteStore(path)
            except sessions.SessionError as exc:
                failures.append(exc)

        workers = [threading.Thread(target=open_store) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
    assert failures == []


def test_two_processes_share_one_sqlite_file(db_path, processes):
    first, second = processes(SQLITE_WORKER, str(db_path)), processes(SQLITE_WORKER, str(db_path))
    first.call("set", "a", rec("from first"), 3600)
    assert second.call("get", "a") == rec("from first")
    second.call("set", "b", rec("from second"), 3600)
    assert first.call("get", "b") == rec("from second")
    first.call("set", "short", rec(), 60)
    second.call("advance", 120)  # the second process lives two minutes later: "short" has expired there
    assert second.call("get", "short") is None and first.call("get", "short") == rec()
    assert second.call("prune") == 1  # the second process removes the first one's expired row
    assert first.call("get", "short") is None and first.call("__len__") == 2


def test_processes_writing_at_once_lose_nothing(db_path, processes):
    workers = [processes(SQLITE_WORKER, str(db_path)) for _ in range(3)]
    for n, worker in enumerate(workers):  # all three write at the same time
        worker.popen.stdin.write(json.dumps(["write_many", f"w{n}-", 200]) + "\n")
    for worker in workers:
        worker.read_line()
    assert len(sessions.SQLiteStore(db_path)) == 600


def test_updates_from_two_processes_at_once_lose_nothing(db_path, processes):
    """Store.update is one write transaction: the other process waits between our read and our write."""
    sessions.SQLiteStore(db_path).set("counter", "0", None)
    workers = [processes(SQLITE_WORKER, str(db_path)) for _ in range(2)]
    for worker in workers:  # both run their 150 read-modify-writes at the same time
        worker.popen.stdin.write(json.dumps(["increment", "counter", 150]) + "\n")
    assert all(json.loads(worker.read_line()) == [True] * 150 for worker in workers)
    assert text_of(sessions.SQLiteStore(db_path).get("counter")) == "300"


#: A process incrementing a counter record through its own PostgresStore: prints "ready", then on "go"
#: runs argv[3] updates and prints their results.
POSTGRES_INCREMENTER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import psycopg
import sessions
store = sessions.PostgresStore(lambda: psycopg.connect(sys.argv[2]))
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps([store.update("counter", lambda record: str(int(record) + 1), None)
                  for _ in range(int(sys.argv[3]))]), flush=True)
"""


def test_postgres_updates_from_processes_at_once_lose_nothing(request, processes):
    """update is one transaction holding the row lock from its SELECT to its UPDATE: other processes (other
    machines alike) wait, then change what it wrote."""
    store = postgres_store(request, "psycopg", time.time)
    store.set("counter", "0", None)
    dsn = request.getfixturevalue("postgres_dsn")
    workers = [processes(POSTGRES_INCREMENTER, dsn, "100") for _ in range(3)]
    assert all(worker.read_line().strip() == "ready" for worker in workers)
    for worker in workers:
        worker.popen.stdin.write("go\n")
    assert all(json.loads(worker.read_line(timeout=60)) == [True] * 100 for worker in workers)
    assert text_of(store.get("counter")) == "300"


class CounterHandler(sessions.SessionHandlerMixin, http.server.BaseHTTPRequestHandler):
    """Counts the visits of a session; the server's process ends in the restart test."""

    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass

    def do_GET(self):
        self.session["views"] = self.session.get("views", 0) + 1
        body = str(self.session["views"]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(http.server.ThreadingHTTPServer):
    """Collects the errors the handler re-raises (a failed store) instead of printing them."""

    daemon_threads = True

    def __init__(self, manager: sessions.SessionManager) -> None:
        handler = type("Handler", (CounterHandler,), {"session_manager": manager})
        super().__init__(("127.0.0.1", 0), handler)
        self.errors = []

    def handle_error(self, request, client_address):
        self.errors.append(sys.exc_info()[1])


#: An http.server process whose sessions live in an SQLite file; prints its port, serves until stopped.
SQLITE_SERVER = """
import sys
sys.path.insert(0, sys.argv[1])
import sessions
from test_stores import QuietServer
manager = sessions.SessionManager("restart secret", store=sessions.SQLiteStore(sys.argv[2]), cookie={"max_age": 3600})
server = QuietServer(manager)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Browser:
    """urllib with a cookie jar; answers (status, body text, Set-Cookie values), 500s included."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, port: int, path: str = "/"):
        try:
            with self.opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                return response.status, response.read().decode(), response.headers.get_all("Set-Cookie") or []
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode(), error.headers.get_all("Set-Cookie") or []


def test_a_restart_keeps_sessions_in_the_sqlite_file(db_path, processes):
    browser = Browser()
    server = processes(SQLITE_SERVER, str(db_path))
    port = int(server.read_line())
    assert browser.get(port)[:2] == (200, "1") and browser.get(port)[:2] == (200, "2")
    server.stop()
    restarted = processes(SQLITE_SERVER, str(db_path))  # a new process on the same file
    assert browser.get(int(restarted.read_line()))[:2] == (200, "3")


@pytest.fixture
def redis_site(redis_server):
    """A threaded http.server on 127.0.0.1 whose sessions live in the fixture's Redis."""
    redis_server.flushall()
    client = redis_client_for(redis_server)
    server = QuietServer(sessions.SessionManager(SECRET, store=sessions.RedisStore(client)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    client.close()


def test_redis_outage_gives_clean_500s_then_recovers(redis_server, redis_site):
    port, browser = redis_site.server_address[1], Browser()
    assert browser.get(port)[:2] == (200, "1")
    sid = sessions.unsign(unquote(next(iter(browser.jar)).value)[2:], SECRET)
    with redis_server.stopped():
        for client in (browser, browser, Browser()):  # loading fails; for a newcomer, saving fails
            status, body, set_cookies = client.get(port)
            assert status == 500 and set_cookies == [] and "session" in body
            assert sid and sid not in body and "views" not in body
    assert all(isinstance(error, sessions.StoreError) for error in redis_site.errors) and redis_site.errors
    assert browser.get(port)[:2] == (200, "1")  # back on the same port; no persistence: a new session
    assert browser.get(port)[:2] == (200, "2")


@pytest.fixture(params=["pool", "psycopg"])
def postgres_site(request):
    """A threaded http.server on 127.0.0.1 whose sessions live in the test PostgreSQL, through a pool or a
    connect callable."""
    store = postgres_store(request, request.param, time.time)
    server = QuietServer(sessions.SessionManager(SECRET, store=store))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_postgres_outage_gives_clean_500s_then_recovers_by_itself(postgres_server, postgres_site, request):
    """The database stops under a running server: clean 500s (no cookie, no id in the page); once it is
    back, requests work again, the session intact. With a connect callable the first request already does
    (the connections the outage broke are replaced, not reused); a pool comes back after its reconnection
    backoff (psycopg_pool: about a second)."""
    port, browser = postgres_site.server_address[1], Browser()
    assert browser.get(port)[:2] == (200, "1") and browser.get(port)[:2] == (200, "2")
    sid = sessions.unsign(unquote(next(iter(browser.jar)).value)[2:], SECRET)
    with postgres_server.stopped():
        for client in (browser, Browser()):  # loading fails; for a newcomer, saving fails
            status, body, set_cookies = client.get(port)
            assert status == 500 and set_cookies == [] and "session" in body
            assert sid and sid not in body and "views" not in body
    assert all(isinstance(error, sessions.StoreError) for error in postgres_site.errors) and postgres_site.errors
    attempts, deadline = 1, time.monotonic() + 20
    while browser.get(port)[0] == 500 and time.monotonic() < deadline:
        attempts += 1
        time.sleep(0.2)
    assert browser.get(port)[:2] == (200, "4")  # the data survived in the database
    assert Browser().get(port)[:2] == (200, "1")
    if "psycopg" in request.node.callspec.id:
        assert attempts == 1


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2", "pg8000"])
def test_postgres_connections_a_restart_broke_are_replaced_without_a_failed_call(postgres_server, request, driver):
    """Idle connections die with a restart unnoticed; the first call on one finds it dead at its first
    statement and runs again on a new connection, so no request fails once the database is back."""
    store = postgres_store(request, driver, time.time)
    store.set("a", rec(), time.time() + 60)
    with postgres_server.stopped():
        pass
    assert text_of(store.get("a")) == rec()
    store.set("b", rec(), time.time() + 60)


# 6. The README's Stores section: every snippet runs ########################################################


def test_readme_stores_snippets_run_as_files(tmp_path, redis_server):
    """Each block runs as a file of its own, in order, in one directory (the backup copies the database
    the first block made); the Redis block gets the test server's URL instead of the default one. The
    PostgreSQL block has a test of its own (below)."""
    snippets = [snippet for snippet in readme_stores_snippets() if "PostgresStore" not in snippet]
    assert len(snippets) == 4
    redis_server.flushall()
    for number, snippet in enumerate(snippets):
        assert snippet.count("redis://127.0.0.1:6379/0") <= 1
        path = tmp_path / f"snippet{number}.py"
        path.write_text(snippet.replace("redis://127.0.0.1:6379/0", redis_server.url))
        subprocess.run([sys.executable, str(path)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(HERE)},
                       check=True, timeout=60)
    with sqlite3.connect(tmp_path / "sessions-backup.db") as copy:
        assert copy.execute("PRAGMA user_version").fetchone()[0] == sessions.SQLiteStore.SCHEMA_VERSION


def test_readme_postgres_snippet_runs_as_a_file(tmp_path, postgres_dsn, postgres_server):
    """The PostgreSQL block runs against the test server (its URL instead of the README's) and creates the
    table; then the store it describes works there."""
    pytest.importorskip("psycopg_pool")
    (snippet,) = [block for block in readme_stores_snippets() if "sessions.PostgresStore(" in block]
    assert snippet.count("postgresql://app@127.0.0.1:5432/app") == 1
    path = tmp_path / "snippet.py"
    path.write_text(snippet.replace("postgresql://app@127.0.0.1:5432/app", postgres_server.url)
                    + "\nstore.set('from-readme', '{}', None)\npool.close()\n")
    subprocess.run([sys.executable, str(path)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(HERE)},
                   check=True, timeout=60)
    assert pg_rows(postgres_dsn, "SELECT sid FROM session") == [("from-readme",)]


def test_readme_async_postgres_snippet_runs_as_a_file(tmp_path, postgres_dsn, postgres_server):
    """The AsyncPostgresStore block runs against the test server: it creates the table, stores a session
    and prints its cookie."""
    pytest.importorskip("psycopg_pool")
    (snippet,) = [block for block in readme_stores_snippets() if "sessions.AsyncPostgresStore(" in block]
    assert snippet.count("postgresql://app@127.0.0.1:5432/app") == 1
    path = tmp_path / "snippet.py"
    path.write_text(snippet.replace("postgresql://app@127.0.0.1:5432/app", postgres_server.url))
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(HERE)},
                          check=True, timeout=60, capture_output=True, text=True)
    assert done.stdout.startswith("['sid=s%3A")
    ((record,),) = pg_rows(postgres_dsn, "SELECT sess::text FROM session")
    assert json.loads(record)["user"] == "ada"


# 8. Full disk, full memory: clean 500s, nothing half-written, recovery once space is back ################


def serve(manager: sessions.SessionManager):
    server = QuietServer(manager)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    return server, thread


def stop(server, thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 1 MiB tmpfs mounted for the test (as root, as CI runs), unmounted after it."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        from conftest import missing

        missing(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the full-disk test needs root")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of ``directory``'s filesystem; deleting it gives the space back."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as file:  # unbuffered: each write meets ENOSPC itself
        for size in (65536, 4096, 1):  # then the last few pages and bytes too
            try:
                while True:
                    file.write(b"\0" * size)
            except OSError:  # ENOSPC: full
                pass
    return filler


def test_a_full_disk_gives_clean_500s_keeps_every_record_whole_and_recovers(tiny_filesystem):
    """SQLiteStore's file on a filesystem that fills up under a running server: requests that must write
    fail with a clean 500 (no cookie, no id), the stored session keeps its last value, and once the space
    is back the same session goes on from there and new ones start."""
    store = sessions.SQLiteStore(tiny_filesystem / "sessions.db")
    server, thread = serve(sessions.SessionManager(SECRET, store=store))
    port = server.server_address[1]
    try:
        browser = Browser()
        assert [browser.get(port)[:2] for _ in range(3)] == [(200, "1"), (200, "2"), (200, "3")]
        sid = sessions.unsign(unquote(next(iter(browser.jar)).value)[2:], SECRET)
        filler = fill(tiny_filesystem)
        acknowledged = 3
        for client in [Browser() for _ in range(5)] + [browser] * 5:
            status, body, set_cookies = client.get(port)
            assert status in (200, 500)
            if status == 500:  # clean: no cookie, no id, no data
                assert set_cookies == [] and sid not in body and "views" not in body
            elif client is browser:  # a write SQLite could still fit in pages it had: whole, counted on
                acknowledged = int(body)
        assert server.errors and all(isinstance(error, sessions.StoreError) for error in server.errors)
        filler.unlink()
        assert json.loads(text_of(store.get(sid)))["views"] == acknowledged  # never a torn or lost write
        assert browser.get(port)[:2] == (200, str(acknowledged + 1))
        assert Browser().get(port)[:2] == (200, "1")
    finally:
        stop(server, thread)


def test_redis_at_maxmemory_with_noeviction_gives_clean_500s_and_recovers(redis_server, redis_site):
    """Redis refuses writes (OOM) at ``maxmemory`` under ``noeviction``: requests that write fail with a
    clean 500 and the stored session keeps its value; reads still work; raising the limit recovers."""
    port, browser = redis_site.server_address[1], Browser()
    assert [browser.get(port)[:2] for _ in range(2)] == [(200, "1"), (200, "2")]
    sid = sessions.unsign(unquote(next(iter(browser.jar)).value)[2:], SECRET)
    admin = redis_client_for(redis_server)
    try:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)  # far below what Redis uses: every write is refused (OOM)
        for client in (browser, Browser()):
            status, body, set_cookies = client.get(port)
            assert status == 500 and set_cookies == [] and sid not in body
        assert json.loads(admin.get("sess:" + sid))["views"] == 2
    finally:
        admin.config_set("maxmemory", 0)
    assert browser.get(port)[:2] == (200, "3")
    assert redis_site.errors and all(isinstance(error, sessions.StoreError) for error in redis_site.errors)
    admin.close()
