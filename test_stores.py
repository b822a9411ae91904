"""Store conformance and operations tests: MemoryStore, SQLiteStore, RedisStore."""

from __future__ import annotations

import pytest
import redis

import sessions
from test_sessions import SECRET, T0, Clock, cookie_header_for


def test_redis_server_fixture_stops_and_starts_on_the_same_port(redis_server):
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    client.set("k", "v")
    assert client.get("k") == b"v"
    with redis_server.stopped():
        assert not redis_server.running
    assert client.ping()
    redis_server.flushall()
    assert client.get("k") is None


# The manager side of CONTRACT decision 1 (until branch refactor's version lands) ###########################


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


# RedisStore: connect-redis 9's format ######################################################################


@pytest.fixture
def redis_client(redis_server):
    redis_server.flushall()
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    yield client
    client.close()


def test_redis_store_writes_connect_redis_keys_values_and_ttls(redis_client):
    store = sessions.RedisStore(redis_client, clock=Clock(T0))
    store.set("apple", '{"cookie":{}}', T0 + 59.2)
    assert redis_client.get("sess:apple") == b'{"cookie":{}}'
    assert redis_client.ttl("sess:apple") == 60
    assert store.get("apple") == ('{"cookie":{}}', pytest.approx(T0 + 60, abs=1))
