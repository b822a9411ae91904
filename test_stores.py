"""Store conformance and operations tests: MemoryStore, SQLiteStore, RedisStore."""

from __future__ import annotations

import redis


def test_redis_server_fixture_stops_and_starts_on_the_same_port(redis_server):
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    client.set("k", "v")
    assert client.get("k") == b"v"
    with redis_server.stopped():
        assert not redis_server.running
    assert client.ping()
    redis_server.flushall()
    assert client.get("k") is None
