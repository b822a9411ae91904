"""Who is logged in where: session.owner, the owner index of every store, sessions_of / end_session /
end_sessions_of, and the operations CLI (``python3 sessions.py STORE COMMAND``) as a real subprocess.

The index part of the store conformance suite runs on MemoryStore, SQLiteStore, RedisStore (one server and
Sentinel); Redis Cluster and PostgresStore, which have no owner index, are checked to say so clearly.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

import sessions
from conftest import AsyncStoreFacade, LaxStore, sid_of
from test_sessions import SECRET, T0, Clock, cookie_header_for, request_cookie
from test_interop import SECRET as INTEROP_SECRET
from test_interop import LONG_MS, Browser, RedisBackend, make_stack, node  # noqa: F401 (node: a fixture)
from test_stores import RedisClock, async_redis_store, pg_rows, postgres_store, redis_client_of

HERE = Path(__file__).resolve().parent
SESSIONS_PY = str(HERE / "sessions.py")


def record(owner=None, data='{"v":1}', created=None, sent=None, max_age_ms=60000, expires="2023-11-14T22:14:20.000Z"):
    """A record as the manager writes it, with the owner after the time keys."""
    cookie = f'{{"cookie":{{"originalMaxAge":{max_age_ms},"expires":"{expires}","httpOnly":true,"path":"/"}}'
    return cookie + sessions._RecordFormat.after_cookie(created, data, sent, owner)


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-sentinel", "postgres", "async-postgres", "async-redis"])
def store_and_clock(request, tmp_path):
    if request.param == "postgres":
        clock = Clock(T0)
        return postgres_store(request, "psycopg", clock), clock  # create_table=True: the owner column too
    if request.param == "async-postgres":
        clock = Clock(T0)
        store = sessions.AsyncPostgresStore(request.getfixturevalue("async_postgres_pool"), clock=clock,
                                            create_table=True)
        return AsyncStoreFacade(store, request.getfixturevalue("store_loop")), clock
    if request.param == "async-redis":
        return async_redis_store("redis", request)
    if request.param == "memory":
        clock = Clock(T0)
        return sessions.MemoryStore(clock=clock), clock
    if request.param == "sqlite":
        clock = Clock(T0)
        return sessions.SQLiteStore(tmp_path / "sessions.db", clock=clock), clock
    client = redis_client_of(request.param, request)
    clock = RedisClock(client)
    return sessions.RedisStore(client, clock=clock), clock


@pytest.fixture
def store(store_and_clock):
    return store_and_clock[0]


@pytest.fixture
def clock(store_and_clock):
    return store_and_clock[1]


def manager_for(store, clock, **options):
    return sessions.SessionManager(SECRET, store=store, clock=clock, cookie={"max_age": 3600}, **options)


def log_in(manager, owner, **data):
    """A browser logging in: a new session, regenerated, with an owner; its Cookie header."""
    session = manager.open(None)
    session.regenerate()
    session.owner = owner
    session.update(data)
    (cookie,) = manager.commit(session)
    return cookie_header_for(sid_of(cookie, SECRET))


# 1. session.owner and its place in the record ############################################################


def test_owner_is_stored_after_the_time_keys_and_hidden_from_the_data():
    clock = Clock()
    store = sessions.MemoryStore(clock=clock)
    manager = manager_for(store, clock, absolute_timeout=7200, cookie_refresh=0.5)
    header = log_in(manager, "user-42", ua="Firefox")
    stored = json.loads(store.get(sid_of(header.split("=", 1)[1]))[0])
    assert list(stored) == ["cookie", "__createdAt", "__cookieSentExpires", "__owner", "ua"]
    assert stored["__owner"] == "user-42"
    session = manager.open(header)
    assert session.owner == "user-42"
    assert dict(session) == {"ua": "Firefox"} and "__owner" not in session


def test_owner_key_is_reserved():
    session = sessions.SessionManager(SECRET).open(None)
    with pytest.raises(sessions.SerializationError):
        session[sessions.OWNER_KEY] = "someone"


@pytest.mark.parametrize("value", ["", "x" * (sessions.MAX_OWNER_LENGTH + 1), 42, b"u", "\ud800"])
def test_an_owner_that_is_not_a_short_string_is_refused(value):
    session = sessions.SessionManager(SECRET).open(None)
    with pytest.raises(sessions.ConfigurationError, match="owner"):
        session.owner = value
    assert session.owner is None


def test_setting_the_owner_is_a_change_that_is_saved():
    clock = Clock()
    store = sessions.MemoryStore(clock=clock)
    manager = manager_for(store, clock)
    session = manager.open(None)
    session.owner = "u1"  # only the owner: still a session worth storing (a login)
    assert session.modified
    (cookie,) = manager.commit(session)
    header = cookie_header_for(sid_of(cookie, SECRET))
    session = manager.open(header)
    session.owner = "u1"  # the same owner: no change
    assert not session.modified
    session.owner = "u2"
    manager.commit(session)
    assert manager.open(header).owner == "u2"
    assert set(store.records_of("u2")) == {sid_of(cookie)} and store.records_of("u1") == {}


def test_owner_after_save_is_not_written_twice():
    clock = Clock()
    store = sessions.MemoryStore(clock=clock)
    manager = manager_for(store, clock)
    header = log_in(manager, "u1")
    session = manager.open(header)
    session.owner = "u2"
    session.save()
    before = store.get(session.id)
    manager.commit(session)
    assert store.get(session.id) == before and manager.open(header).owner == "u2"


@pytest.mark.parametrize("action, kept", [
    (lambda s: s.regenerate(), None), (lambda s: s.regenerate(keep_data=True), "u1"),
    (lambda s: s.flush(), None), (lambda s: s.destroy(), None),
])
def test_regenerate_flush_and_destroy_drop_the_owner_unless_the_data_is_kept(action, kept):
    manager = sessions.SessionManager(SECRET)
    session = manager.open(log_in(manager, "u1", a=1))
    action(session)
    assert session.owner == kept
    manager.commit(session)
    assert [len(manager.sessions_of("u1"))] == [0 if kept is None else 1]


def test_a_concurrent_request_that_did_not_change_the_owner_keeps_the_stored_one():
    clock = Clock()
    store = sessions.MemoryStore(clock=clock)
    manager = manager_for(store, clock)
    header = log_in(manager, "u1")
    slow, quick = manager.open(header), manager.open(header)
    quick.owner = "u2"
    manager.commit(quick)
    slow["cart"] = 3  # loaded while the owner was u1; commits after quick changed it
    manager.commit(slow)
    after = manager.open(header)
    assert after.owner == "u2" and after["cart"] == 3
    assert [info.data for info in manager.sessions_of("u2", expose=["cart"])] == [{"cart": 3}]


def test_express_session_keeps_the_owner_as_a_data_key():
    """Node rewrites a record from its parsed object: the cookie object first, then the keys in their order."""
    clock = Clock()
    store = sessions.MemoryStore(clock=clock)
    manager = manager_for(store, clock)
    header = log_in(manager, "u1", ua="x")
    sid = sid_of(header.split("=", 1)[1])
    text, _ = store.get(sid)
    parsed = json.loads(text)
    parsed["views"] = 2  # what an Express handler adds
    store.set(sid, json.dumps(parsed, separators=(",", ":")), T0 + 3600)
    assert manager.open(header).owner == "u1" and set(store.records_of("u1")) == {sid}


# 2. _owner_of: the exact text scan every store uses #######################################################

owners = st.text(min_size=1, max_size=20).filter(sessions._is_owner)
values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(owner=st.none() | owners, data=st.dictionaries(st.text(max_size=10), values, max_size=4),
       created=st.none() | st.integers(0, 2**40), sent=st.none() | st.integers(0, 2**40))
def test_owner_of_reads_what_the_record_holds(owner, data, created, sent):
    data = {key: value for key, value in data.items() if key not in sessions._RESERVED_KEYS}
    text = record(owner, sessions._data_json(data), created, sent)
    assert sessions._owner_of(text) == owner == json.loads(text).get("__owner")
    assert sessions._parse_record(text)[0] == data and sessions._parse_record(text)[6] == owner


@pytest.mark.parametrize("text, owner", [
    ('{"cookie":{},"v":"__owner","__owner":"a"}', "a"),  # not in its place: parsed
    ('{"cookie":{},"\\u005f_owner":"b"}', "b"),  # an escaped key: parsed
    ('{"cookie":{},"__owner":"x\\"y"}', 'x"y'),  # an escaped owner: parsed
    ('{"cookie":{},"v":1}', None),
    ('{"cookie":{},"__owner":42}', None),
    ("not json __owner", None),
])
def test_owner_of_other_text_falls_back_to_parsing(text, owner):
    assert sessions._owner_of(text) == owner


# 3. The owner index: conformance on every store with one ##################################################


def test_records_of_follows_set_update_touch_and_destroy(store, clock):
    store.set("a", record("u1"), T0 + 60)
    store.set("b", record("u1"), T0 + 30)
    store.set("c", record("u2"), T0 + 60)
    store.set("d", record(None), T0 + 60)
    assert set(store.records_of("u1")) == {"a", "b"} and set(store.records_of("u2")) == {"c"}
    assert json.loads(store.records_of("u2")["c"][0])["v"] == 1
    assert store.update("a", lambda stored: record("u2"), T0 + 60)  # the owner changes
    assert set(store.records_of("u1")) == {"b"} and set(store.records_of("u2")) == {"a", "c"}
    assert store.touch("c", record("u2"), T0 + 120)
    store.destroy("c")
    assert set(store.records_of("u2")) == {"a"} and store.records_of("nobody") == {}
    assert store.records_of("u1")["b"][1] == pytest.approx(T0 + 30, abs=1)


def test_expired_records_leave_the_index_without_a_background_job(store, clock):
    store.set("a", record("u1"), T0 + 10)
    store.set("b", record("u1"), T0 + 100)
    clock.advance(50)
    assert set(store.records_of("u1")) == {"b"}
    clock.advance(60)
    assert store.records_of("u1") == {}


def test_an_active_session_stays_listed_past_its_first_expiry(store, clock):
    """Each request extends the session, and the index with it (Redis: the owner set's TTL)."""
    manager = manager_for(store, clock)
    active, idle = log_in(manager, "u1"), log_in(manager, "u1")
    clock.advance(1800)
    manager.commit(manager.open(active)).clear()  # a read-only request: a touch
    clock.advance(1800.5)
    assert [info.handle for info in manager.sessions_of("u1")] == [sessions._sid_hash(sid_of(active.split("=", 1)[1]))]
    assert not manager.open(active).is_new and manager.open(idle).is_new


def test_update_and_touch_of_a_gone_record_do_not_index_it(store, clock):
    store.set("a", record("u1"), T0 + 60)
    store.destroy("a")
    assert not store.update("a", lambda stored: record("u1"), T0 + 60)
    assert not store.touch("a", record("u1"), T0 + 60)
    assert store.records_of("u1") == {} and store.get("a") is None


def test_sessions_of_lists_handles_times_and_exposed_keys(store, clock):
    manager = manager_for(store, clock)
    first = log_in(manager, "u1", ua="Firefox", secret_note="x")
    clock.advance(100)
    second = log_in(manager, "u1", ua="Chrome")
    infos = manager.sessions_of("u1", expose=["ua"])
    assert [info.data for info in infos] == [{"ua": "Chrome"}, {"ua": "Firefox"}]  # most recent first
    newest = infos[0]
    assert newest.handle == sessions._sid_hash(sid_of(second.split("=", 1)[1])) and len(newest.handle) == 12
    assert newest.created.timestamp() == pytest.approx(T0 + 100, abs=1)
    assert newest.last_seen.timestamp() == pytest.approx(T0 + 100, abs=1)
    assert newest.expires.timestamp() == pytest.approx(T0 + 3700, abs=1)
    assert sid_of(first.split("=", 1)[1]) not in repr(infos) and sid_of(second.split("=", 1)[1]) not in repr(infos)


def test_end_session_needs_the_owner_of_the_handle(store, clock):
    manager = manager_for(store, clock)
    mine, theirs = log_in(manager, "u1"), log_in(manager, "u2")
    (handle,) = [info.handle for info in manager.sessions_of("u2")]
    assert not manager.end_session("u1", handle)  # u1 cannot end u2's session
    assert not manager.open(theirs).is_new
    assert manager.end_session("u2", handle) and manager.open(theirs).is_new
    assert not manager.end_session("u2", handle) and not manager.open(mine).is_new


def test_log_out_everywhere_else_keeps_the_session_asking(store, clock):
    manager = manager_for(store, clock)
    browsers = [log_in(manager, "u1") for _ in range(3)]
    other = log_in(manager, "u2")
    here = manager.open(browsers[0])
    assert manager.end_sessions_of("u1", keep=here) == 2
    manager.commit(here)
    assert [manager.open(header).is_new for header in browsers + [other]] == [False, True, True, False]
    assert manager.end_sessions_of("u1") == 1 and manager.sessions_of("u1") == []


@pytest.mark.parametrize("change", [lambda s: s.__setitem__("cart", 1), lambda s: None, lambda s: s.save()],
                         ids=["modified", "touched", "saved"])
def test_an_ended_session_is_never_brought_back_by_a_request_in_flight(store, clock, change):
    manager = manager_for(store, clock)
    header = log_in(manager, "u1")
    in_flight = manager.open(header)  # loaded before the user logged out everywhere
    in_flight.get("x")
    assert manager.end_sessions_of("u1") == 1
    change(in_flight)
    assert manager.commit(in_flight) == []  # and no cookie for the dead id
    assert manager.open(header).is_new and manager.sessions_of("u1") == []


def test_async_variants_call_the_store_as_acommit_does(store, clock):
    import asyncio

    manager = manager_for(store, clock)
    header = log_in(manager, "u1")

    async def scenario():
        (info,) = await manager.asessions_of("u1")
        assert not await manager.aend_session("u2", info.handle)
        assert await manager.aend_session("u1", info.handle)
        return await manager.aend_sessions_of("u1")

    assert asyncio.run(scenario()) == 0 and manager.open(header).is_new


class AsyncMemory(sessions.AsyncStore):
    """A MemoryStore behind async methods, with or without the optional records_of."""

    def __init__(self, clock, index=True):
        self.inner, self.index = sessions.MemoryStore(clock=clock), index

    async def get(self, sid):
        return self.inner.get(sid)

    async def set(self, sid, record, expires):
        self.inner.set(sid, record, expires)

    async def update(self, sid, change, expires):
        return self.inner.update(sid, change, expires)

    async def touch(self, sid, record, expires):
        return self.inner.touch(sid, record, expires)

    async def destroy(self, sid):
        self.inner.destroy(sid)

    async def records_of(self, owner):
        if not self.index:
            return await super().records_of(owner)
        return self.inner.records_of(owner)


@pytest.mark.parametrize("index", [True, False])
def test_an_async_store_s_owner_index_is_awaited(index):
    import asyncio

    clock = Clock()
    manager = manager_for(AsyncMemory(clock, index), clock)

    async def scenario():
        session = await manager.aopen(None)
        session.owner = "u1"
        await manager.acommit(session)
        if not index:
            with pytest.raises(sessions.ConfigurationError, match="AsyncMemory has no owner index"):
                await manager.asessions_of("u1")
            return
        assert len(await manager.asessions_of("u1")) == 1
        assert await manager.aend_sessions_of("u1") == 1

    asyncio.run(scenario())
    with pytest.raises(sessions.SessionError, match="async"):
        manager.sessions_of("u1")


def test_a_request_in_flight_that_regenerates_keeping_its_data_starts_a_new_session():
    """The README's one exception: the old id stays dead, the new id is a new session (as after a logout)."""
    clock = Clock()
    manager = manager_for(sessions.MemoryStore(clock=clock), clock)
    header = log_in(manager, "u1")
    in_flight = manager.open(header)
    in_flight.get("x")
    manager.end_sessions_of("u1")
    in_flight.regenerate(keep_data=True)
    (cookie,) = manager.commit(in_flight)
    assert manager.open(header).is_new and manager.open(request_cookie(cookie)).owner == "u1"


def test_stores_without_an_owner_index_say_so():
    manager = sessions.SessionManager(SECRET, store=LaxStore())
    for call in (lambda: manager.sessions_of("u1"), lambda: manager.end_sessions_of("u1"),
                 lambda: manager.end_session("u1", "0" * 12)):
        with pytest.raises(sessions.ConfigurationError, match="LaxStore has no owner index"):
            call()


def test_owner_and_keep_arguments_are_checked():
    manager = sessions.SessionManager(SECRET)
    with pytest.raises(sessions.ConfigurationError, match="owner"):
        manager.sessions_of(None)
    for expose in (5, "user_agent", [1]):
        with pytest.raises(sessions.ConfigurationError, match="expose"):
            manager.sessions_of("u1", expose=expose)
    for keep in ("not a session", manager.open_lazy(lambda: (None, False, "/"))):
        with pytest.raises(sessions.ConfigurationError, match="keep"):
            manager.end_sessions_of("u1", keep=keep)


def test_absolute_timeout_hides_sessions_the_manager_would_not_load():
    clock = Clock()
    store = sessions.MemoryStore(clock=clock)
    manager = manager_for(store, clock, absolute_timeout=600)
    log_in(manager, "u1")
    clock.advance(601)
    assert manager.sessions_of("u1") == []


# 4. Store specifics ######################################################################################


def test_memory_store_index_holds_only_live_records():
    clock = Clock()
    store = sessions.MemoryStore(clock=clock, max_sessions=2)
    for sid in "abc":  # c evicts a
        store.set(sid, record("u1"), T0 + 60 + ord(sid))
    assert set(store.records_of("u1")) == {"b", "c"} and set(store._owner_of_id) == {"b", "c"}
    clock.advance(1000)
    store.set("d", record(None), T0 + 2000)  # a write prunes the expired
    assert store._owners == {} and store._owner_of_id == {}
    store.set("e", record("u3"), T0 + 2000)
    store.clear()
    assert store._owners == {} and store._owner_of_id == {}


V1_SCHEMA = ("CREATE TABLE sessions (id TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at REAL NOT NULL)",
             "CREATE INDEX sessions_expires_at ON sessions (expires_at)", "PRAGMA user_version = 1")


def test_sqlite_file_of_schema_1_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # what the sessions.py of schema version 1 made
        for statement in V1_SCHEMA:
            db.execute(statement)
        db.executemany("INSERT INTO sessions VALUES (?, ?, ?)",
                       [("a", record("u1"), T0 + 60), ("b", record(None), T0 + 60), ("c", record("u1"), T0 + 60)])
    store = sessions.SQLiteStore(path, clock=Clock())
    assert set(store.records_of("u1")) == {"a", "c"} and store.get("b")[0] == record(None)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        plan = str(db.execute("EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE owner = 'u1'").fetchall())
    assert "sessions_owner" in plan
    sessions.SQLiteStore(path, clock=Clock())  # opening it again changes nothing
    assert set(store.records_of("u1")) == {"a", "c"}


def test_redis_owner_set_lives_as_long_as_its_longest_lived_member(request):
    client = redis_client_of("redis", request)
    store = sessions.RedisStore(client, clock=Clock())
    store.set("a", record("u1"), T0 + 100)
    store.set("b", record("u1"), T0 + 500)
    store.set("c", record("u1"), T0 + 200)
    assert client.ttl("sess:owner:u1") == 500 and client.smembers("sess:owner:u1") == {b"a", b"b", b"c"}
    assert sorted(store.ids()) == ["a", "b", "c"] and len(store) == 3  # the set is not a session
    client.delete("sess:b")
    assert set(store.records_of("u1")) == {"a", "c"} and client.smembers("sess:owner:u1") == {b"a", b"c"}
    store.clear()
    assert client.keys("*") == []


def test_redis_record_written_by_node_joins_the_index_at_its_first_python_write(request):
    client = redis_client_of("redis", request)
    clock = Clock()
    store = sessions.RedisStore(client, clock=clock)
    manager = manager_for(store, clock)
    client.set("sess:node-sid", record("u1", expires="2023-11-14T23:13:20.000Z"), ex=3600)  # connect-redis's SET
    assert store.records_of("u1") == {}
    manager.commit(manager.open(cookie_header_for("node-sid")))  # read only: a touch
    assert set(store.records_of("u1")) == {"node-sid"} and client.ttl("sess:owner:u1") == client.ttl("sess:node-sid")


def test_redis_update_script_and_watch_paths_both_index(request):
    client = redis_client_of("redis", request)
    store = sessions.RedisStore(client, clock=Clock())
    store.set("a", record(None), T0 + 60)
    merge = sessions._Merge(record("u1"), sessions._RecordFormat.after_cookie(None, '{"v":1}', None, None), None)
    assert store.update("a", merge, T0 + 60)  # the script path
    store.set("b", record(None), T0 + 60)
    assert store.update("b", lambda stored: record("u1"), T0 + 90)  # WATCH / MULTI
    assert set(store.records_of("u1")) == {"a", "b"} and client.ttl("sess:owner:u1") == 90


def test_redis_cluster_has_no_owner_index_and_says_so(request):
    client = redis_client_of("redis-cluster", request)
    clock = Clock()
    store = sessions.RedisStore(client, clock=clock)
    manager = manager_for(store, clock)
    header = log_in(manager, "u1")  # sessions with owners work; they are only not indexed
    assert manager.open(header).owner == "u1"
    with pytest.raises(sessions.ConfigurationError, match="no owner index"):
        manager.sessions_of("u1")
    with pytest.raises(sessions.ConfigurationError, match="Cluster"):
        sessions.RedisStore(client, owner_index=True)


def test_a_connect_pg_simple_table_gains_the_owner_column_with_create_table_and_says_so_without(request):
    """A table connect-pg-simple made (its table.sql, no owner column), holding a session Node wrote: without
    create_table the store works on it as connect-pg-simple does and says how to add the index; with it the
    column and its index are added in place, and the Node-written row joins the index at its first write."""
    clock = Clock()
    plain = postgres_store(request, "psycopg", clock, create_table=False)
    dsn = request.getfixturevalue("postgres_dsn")
    for statement in plain._table_sql():  # connect-pg-simple's own table.sql
        pg_rows(dsn, statement)
    pg_rows(dsn, "INSERT INTO session (sid, sess, expire) VALUES (%s, %s, to_timestamp(%s))",
            ("node-sid", record("u1"), T0 + 60))
    with pytest.raises(sessions.ConfigurationError, match="no owner column: create_table=True adds it"):
        manager_for(plain, clock).sessions_of("u1")
    assert plain.get("node-sid")[0] == record("u1")
    indexed = postgres_store(request, "psycopg", clock, create_table=True)
    assert indexed.records_of("u1") == {}  # the column is there now, still empty for Node's row
    assert indexed.touch("node-sid", record("u1"), T0 + 60)
    assert set(indexed.records_of("u1")) == {"node-sid"}
    assert pg_rows(dsn, "SELECT count(*) FROM pg_indexes WHERE indexname = 'IDX_session_owner'") == [(1,)]


# 5. A model of the index under random logins, logouts, regenerates, expiries and ends ####################


class OwnerIndexModel(RuleBasedStateMachine):
    """MemoryStore and SQLiteStore (and RedisStore, given a client of an empty Redis) through one manager
    each, on one clock; the model is which browser holds which owner."""

    def __init__(self, redis_client=None):
        super().__init__()
        import tempfile

        self.clock = Clock() if redis_client is None else RedisClock(redis_client)
        self.tmp = tempfile.TemporaryDirectory()
        self.managers = [
            manager_for(sessions.MemoryStore(clock=self.clock), self.clock),
            manager_for(sessions.SQLiteStore(Path(self.tmp.name) / "s.db", clock=self.clock), self.clock),
        ]
        if redis_client is not None:
            redis_client.flushdb()
            self.managers.append(manager_for(sessions.RedisStore(redis_client, clock=self.clock), self.clock))
        self.browsers = []  # per browser: [header per manager], owner, expiry

    def teardown(self):
        self.tmp.cleanup()

    def _request(self, index, action):
        browser = self.browsers[index]
        for number, manager in enumerate(self.managers):
            session = manager.open(browser["headers"][number])
            action(session)
            cookies = manager.commit(session)
            if cookies and "Max-Age=0" not in cookies[0] and "Expires=Thu, 01 Jan 1970" not in cookies[0]:
                browser["headers"][number] = cookie_header_for(sid_of(cookies[0], SECRET))

    @rule(owner=st.sampled_from(["u1", "u2", "u3"]))
    def log_in(self, owner):
        self.browsers.append({"headers": [log_in(manager, owner) for manager in self.managers],
                              "owner": owner, "expires": self.clock() + 3600})

    @precondition(lambda self: self.browsers)
    @rule(data=st.data(), keep_data=st.booleans())
    def regenerate(self, data, keep_data):
        index = data.draw(st.integers(0, len(self.browsers) - 1))
        browser = self.browsers[index]
        if browser["owner"] is None:
            return
        self._request(index, lambda session: session.regenerate(keep_data=keep_data))
        browser["owner"] = browser["owner"] if keep_data else None
        browser["expires"] = self.clock() + 3600

    @precondition(lambda self: self.browsers)
    @rule(data=st.data())
    def log_out(self, data):
        index = data.draw(st.integers(0, len(self.browsers) - 1))
        if self.browsers[index]["owner"] is not None:
            self._request(index, lambda session: session.destroy())
            self.browsers[index]["owner"] = None

    @precondition(lambda self: self.browsers)
    @rule(data=st.data())
    def visit(self, data):
        index = data.draw(st.integers(0, len(self.browsers) - 1))
        browser = self.browsers[index]
        if browser["owner"] is not None:
            self._request(index, lambda session: session.get("x"))
            browser["expires"] = self.clock() + 3600

    @rule(seconds=st.sampled_from([60, 1800, 3599, 3601]))
    def time_passes(self, seconds):
        self.clock.advance(seconds)
        for browser in self.browsers:
            if browser["owner"] is not None and browser["expires"] <= self.clock():
                browser["owner"] = None

    @rule(owner=st.sampled_from(["u1", "u2", "u3"]))
    def end_all(self, owner):
        expected = sum(browser["owner"] == owner for browser in self.browsers)
        assert [manager.end_sessions_of(owner) for manager in self.managers] == [expected] * len(self.managers)
        for browser in self.browsers:
            if browser["owner"] == owner:
                browser["owner"] = None

    @invariant()
    def index_matches_the_model(self):
        for owner in ("u1", "u2", "u3"):
            expected = sum(browser["owner"] == owner for browser in self.browsers)
            for manager in self.managers:
                assert len(manager.sessions_of(owner)) == expected


TestOwnerIndexModel = OwnerIndexModel.TestCase
TestOwnerIndexModel.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)


def test_owner_index_model_on_redis_too(request):
    client = redis_client_of("redis", request)
    run_state_machine_as_test(lambda: OwnerIndexModel(client),
                              settings=settings(max_examples=25, stateful_step_count=15, deadline=None))


# 6. The operations CLI, as a subprocess against real stores ##############################################


def cli(*args):
    return subprocess.run([sys.executable, SESSIONS_PY, *args], capture_output=True, text=True, timeout=60)


def test_cli_help_and_usage_errors():
    shown = cli("--help")
    assert shown.returncode == 0
    for word in ("count", "prune", "sessions-of OWNER", "end-sessions-of OWNER", "end HANDLE", "Exit status"):
        assert word in shown.stdout
    for args in ((), ("sqlite:x.db",), ("ftp://x", "count"), ("sqlite:x.db", "end", "not-a-handle"),
                 ("sqlite:x.db", "sessions-of"), ("sqlite:x.db", "frobnicate")):
        done = cli(*args)
        assert done.returncode == 2 and done.stdout == "" and "usage:" in done.stderr, args


def test_cli_on_a_missing_file_fails_without_creating_it(tmp_path):
    done = cli(f"sqlite:{tmp_path / 'typo.db'}", "count")
    assert done.returncode == 1 and "no such SQLite file" in done.stderr
    assert not (tmp_path / "typo.db").exists()


def cli_scenario(store, clock, spec):
    """The same commands on any store: the output never holds a session id."""
    manager = manager_for(store, clock)
    headers = [log_in(manager, "alice@example.com", ua="Firefox") for _ in range(2)] + [log_in(manager, "bob")]
    ids = [sid_of(header.split("=", 1)[1]) for header in headers]
    outputs = []

    def run(*args):
        done = cli(spec, *args)
        outputs.append(done.stdout + done.stderr)
        return done

    assert run("count").stdout == "3\n"
    listed = run("sessions-of", "alice@example.com")
    assert listed.returncode == 0
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert len(lines) == 2 and all(len(fields) == 4 for fields in lines)
    assert {fields[0] for fields in lines} == {sessions._sid_hash(sid) for sid in ids[:2]}
    assert run("sessions-of", "nobody").returncode == 1
    assert run("end", lines[0][0]).stdout == "1\n"
    assert run("end", lines[0][0]).returncode == 1
    assert run("end-sessions-of", "alice@example.com").stdout == "1\n"
    assert run("end-sessions-of", "alice@example.com").returncode == 1
    assert [manager.open(header).is_new for header in headers] == [True, True, False]
    assert run("prune").returncode == 0
    assert run("count").stdout == "1\n"
    for output in outputs:
        assert not any(sid in output for sid in ids) and SECRET not in output


def test_cli_on_sqlite(tmp_path):
    clock = Clock.near_real_time()
    path = tmp_path / "sessions.db"
    cli_scenario(sessions.SQLiteStore(path, clock=clock), clock, f"sqlite:{path}")


def test_cli_on_redis(request):
    client = redis_client_of("redis", request)
    clock = Clock.near_real_time()
    url = request.getfixturevalue("redis_server").url
    cli_scenario(sessions.RedisStore(client, clock=clock), clock, url)


def test_cli_on_postgres(request):
    clock = Clock.near_real_time()
    store = postgres_store(request, "psycopg", clock)
    cli_scenario(store, clock, request.getfixturevalue("postgres_server").url)


def test_cli_table_and_prefix_options_name_the_stores_of_an_app(tmp_path, request):
    clock = Clock.near_real_time()
    path = tmp_path / "app.db"
    log_in(manager_for(sessions.SQLiteStore(path, table="web_sessions", clock=clock), clock), "u1")
    assert cli(f"sqlite:{path}", "count").stdout == "0\n"  # the default table, empty
    assert cli("--table", "web_sessions", f"sqlite:{path}", "sessions-of", "u1").returncode == 0
    client = redis_client_of("redis", request)
    log_in(manager_for(sessions.RedisStore(client, prefix="app:", clock=clock), clock), "u1")
    url = request.getfixturevalue("redis_server").url
    assert cli(url, "sessions-of", "u1").returncode == 1
    assert cli(url, "--prefix", "app:", "sessions-of", "u1").returncode == 0


def test_cli_prune_deletes_expired_sqlite_rows(tmp_path):
    path = tmp_path / "sessions.db"
    store = sessions.SQLiteStore(path, clock=Clock(T0))  # written at T0, long expired by the real clock
    store.set("a", record("u1"), T0 + 60)
    done = cli(f"sqlite:{path}", "prune")
    assert (done.returncode, done.stdout) == (0, "1\n")


def test_cli_store_failure_is_exit_1_without_the_url_password():
    done = cli("redis://:hunter2-secret@127.0.0.1:1/0", "count")
    assert done.returncode == 1 and "StoreError" not in done.stderr and "cannot count" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_importing_sessions_imports_no_client_and_the_cli_only_the_one_named(tmp_path):
    path = tmp_path / "s.db"
    sessions.SQLiteStore(path)
    probe = ("import sys, runpy; sys.argv = ['sessions.py', %r, 'count']\n"
             "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('redis', 'psycopg') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe % (f"sqlite:{path}", SESSIONS_PY)],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "[]"
    done = subprocess.run([sys.executable, "-c", probe % ("redis://127.0.0.1:1/0", SESSIONS_PY)],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "['redis']"


# 7. The README's section runs as written ##################################################################

README = (HERE / "README.md").read_text(encoding="utf-8")


def test_readme_owners_example_runs_as_a_file(tmp_path):
    (code,) = re.findall(r"^<!-- owners example -->\n```python\n(.*?)^```$", README, re.M | re.S)
    assert code.startswith("# owners.py:")
    (tmp_path / "owners.py").write_text(code)
    done = subprocess.run([sys.executable, "owners.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(HERE)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and {line.split(" ", 1)[1].split(" last")[0] for line in lines[:2]} == {
        "Firefox on a laptop", "Safari on a phone"}
    assert lines[2:] == ["ended 1", "laptop logged out: True - phone still in: True"]


def test_readme_cli_block_lists_the_commands_the_cli_has():
    section = README[README.index("### The operations CLI"):README.index("\n## Stores\n")]
    help_text = cli("--help").stdout
    for command in ("count", "prune", "sessions-of OWNER", "end-sessions-of OWNER", "end HANDLE"):
        assert f"  {command} " in section and f"  {command} " in help_text


# 8. Express keeps the owner: the real Node stack on the same Redis (fixtures/express) #####################


@pytest.fixture(scope="module")
def node_stack(node, redis_server, tmp_path_factory):
    yield from make_stack(node, RedisBackend(redis_server), tmp_path_factory, LONG_MS, rolling=False)


def test_express_keeps_the_owner_and_a_node_session_joins_the_index_at_its_first_python_request(node_stack):
    node_stack.backend.clear()
    browser = Browser()
    browser.post(node_stack.node, "/set", {"__owner": "ada", "visits": 1})  # an Express app's login
    store = node_stack.backend.python_store()
    manager = sessions.SessionManager(INTEROP_SECRET, store=store)
    assert manager.sessions_of("ada") == []  # Node's own write does not index it
    on_python = browser.get(node_stack.python)
    assert on_python.data == {"visits": 1}  # the owner is not among the data
    assert len(manager.sessions_of("ada")) == 1  # its first Python request (a touch) indexed it
    browser.post(node_stack.node, "/set", {"visits": 2})  # Express rewrites the record: the key stays
    assert json.loads(node_stack.record(browser.sid()))["__owner"] == "ada"
    browser.post(node_stack.python, "/set", {"visits": 3})
    assert list(json.loads(node_stack.record(browser.sid())))[:2] == ["cookie", "__owner"]
    assert manager.end_sessions_of("ada") == 1
    assert browser.get(node_stack.node).data == {}  # ended for Express too


def test_a_session_s_handle_is_its_handle_in_sessions_of():
    clock = Clock()
    manager = manager_for(sessions.MemoryStore(clock=clock), clock)
    header = log_in(manager, "u1")
    session = manager.open(header)
    assert [info.handle for info in manager.sessions_of("u1")] == [session.handle]
    assert session.handle == sessions._sid_hash(session.id) and session.id not in session.handle
