"""The async path (issue 18): AsyncStore, the manager's aopen/acommit, the session's asave/areload/adestroy/
aflush, and ASGISessionMiddleware awaiting an async store on the event loop with no worker thread.

The policy is one (the manager's steps); only the driver differs. So the strongest test is the model one:
random requests run through the sync API on a MemoryStore and through the async API on an AsyncStore over
another MemoryStore give the same records and the same cookies.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Dict, List, Optional, Tuple

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from hypothesis import given, settings
from hypothesis import strategies as st

import sessions
from conftest import Clock, record_of
from test_frameworks import LOOP_THREAD, serve_asgi

SECRET = "async secret"


class AsyncMemoryStore(sessions.AsyncStore):
    """An AsyncStore over a MemoryStore: each call first awaits ``gate()`` (by default a no-op; a delay,
    or waiting for other calls), then does the memory operation in one step, as one Redis command would.
    It records its calls, how many were in flight at once, and the threads they ran on."""

    def __init__(self, clock: Any = None) -> None:
        self.memory = sessions.MemoryStore(clock=clock or Clock())
        self.calls: List[str] = []
        self.in_flight = self.max_in_flight = 0
        self.threads: set = set()
        self.failing: set = set()

    async def gate(self, method: str) -> None:
        await asyncio.sleep(0)

    async def _call(self, method: str, *args: Any) -> Any:
        self.calls.append(method)
        self.threads.add(threading.current_thread().name)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate(method)
            if method in self.failing:
                raise ConnectionError(f"down, and this message quotes {args[0]}")
            return getattr(self.memory, method)(*args)
        finally:
            self.in_flight -= 1

    async def get(self, sid):
        return await self._call("get", sid)

    async def set(self, sid, record, expires):
        await self._call("set", sid, record, expires)

    async def update(self, sid, change, expires):
        return await self._call("update", sid, change, expires)

    async def touch(self, sid, record, expires):
        return await self._call("touch", sid, record, expires)

    async def destroy(self, sid):
        await self._call("destroy", sid)


def managers(clock: Clock) -> Tuple[sessions.SessionManager, sessions.SessionManager]:
    """A sync manager on a MemoryStore and an async one on an AsyncMemoryStore, making the same ids."""
    def ids() -> Any:
        counter = iter(range(10**6))
        return lambda: f"id{next(counter)}"

    options = dict(cookie={"max_age": 60}, clock=clock)
    sync = sessions.SessionManager(SECRET, store=sessions.MemoryStore(clock=clock), genid=ids(), **options)
    async_ = sessions.SessionManager(SECRET, store=AsyncMemoryStore(clock), genid=ids(), **options)
    return sync, async_


# The same policy through both drivers ####################################################################

ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("set"), st.sampled_from("abc"), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.sampled_from("abc")),
    st.sampled_from([("save",), ("reload",), ("regenerate",), ("regenerate-keep",), ("flush",), ("destroy",),
                     ("read",)]),
), max_size=4)


def act_sync(session: sessions.Session, action: Tuple[Any, ...]) -> None:
    name = action[0]
    if name == "set":
        session[action[1]] = action[2]
    elif name == "delete":
        session.pop(action[1], None)
    elif name == "read":
        session.get("a")
    elif name.startswith("regenerate"):
        session.regenerate(keep_data=name.endswith("keep"))
    else:
        getattr(session, name)()


async def act_async(session: sessions.Session, action: Tuple[Any, ...]) -> None:
    name = action[0]
    if name in ("save", "reload", "flush", "destroy") or name.startswith("regenerate"):
        method = "aregenerate" if name.startswith("regenerate") else "a" + name
        args = (name.endswith("keep"),) if name.startswith("regenerate") else ()
        await getattr(session, method)(*args)
    else:
        act_sync(session, action)


def outcome(call: Any) -> Any:
    try:
        return call()
    except sessions.SessionError as error:
        return type(error).__name__


@settings(max_examples=150, deadline=None)
@given(requests=st.lists(st.tuples(ACTIONS, st.sampled_from([200, 200, 500])), min_size=1, max_size=5))
def test_the_async_path_stores_and_sends_exactly_what_the_sync_path_does(requests):
    clock = Clock()
    sync, async_ = managers(clock)
    cookies: Dict[str, Optional[str]] = {"sync": None, "async": None}
    for actions, status in requests:
        clock.now += 1
        session = sync.open(cookies["sync"])
        sync_results = [outcome(lambda: act_sync(session, action)) for action in actions]
        sync_cookies = sync.commit(session, status)

        async def async_request() -> Tuple[List[Any], List[str]]:
            session = await async_.aopen(cookies["async"])
            results = []
            for action in actions:
                try:
                    results.append(await act_async(session, action))
                except sessions.SessionError as error:
                    results.append(type(error).__name__)
            return results, await async_.acommit(session, status)

        async_results, async_cookies = asyncio.run(async_request())
        assert async_results == sync_results
        assert async_cookies == sync_cookies
        for name, sent in (("sync", sync_cookies), ("async", async_cookies)):
            if sent:
                cookies[name] = sent[-1].split(";", 1)[0]
        memory = async_.store.memory
        assert sorted(sync.store.ids()) == sorted(memory.ids())
        assert all(record_of(sync.store, sid) == record_of(memory, sid) for sid in memory.ids())


# An async store from sync code, failures, cancellation ###################################################


def test_sync_calls_that_need_an_async_store_say_what_to_use_instead():
    clock = Clock()
    _, manager = managers(clock)
    session = manager.open(None)  # a new session needs no store: fine
    session["n"] = 1
    with pytest.raises(sessions.SessionError, match="asave"):
        session.save()
    cookie = asyncio.run(manager.acommit(session))[0].split(";", 1)[0]
    with pytest.raises(sessions.SessionError, match="aopen"):
        manager.open(cookie)
    assert asyncio.run(manager.aopen(cookie))["n"] == 1


def test_an_async_store_failure_is_a_store_error_that_quotes_no_id():
    clock = Clock()
    _, manager = managers(clock)

    async def request() -> None:
        session = await manager.aopen(None)
        session["n"] = 1
        manager.store.failing.add("set")
        await manager.acommit(session)

    with pytest.raises(sessions.StoreError) as raised:
        asyncio.run(request())
    assert "id0" not in str(raised.value) and raised.value.__suppress_context__
    assert isinstance(raised.value.original, ConnectionError)


def test_a_commit_cancelled_while_the_store_writes_leaves_the_record_whole_and_the_session_closed():
    clock = Clock()
    _, manager = managers(clock)
    store = manager.store

    async def scenario() -> None:
        session = await manager.aopen(None)
        session["n"] = 1
        cookie = (await manager.acommit(session))[0].split(";", 1)[0]
        stored = record_of(store.memory, "id0")
        started = asyncio.Event()

        async def slow_gate(method: str) -> None:
            started.set()
            await asyncio.sleep(30)

        session = await manager.aopen(cookie)
        session["n"] = 2
        store.gate = slow_gate  # the commit's update waits; the request is cancelled meanwhile
        commit = asyncio.ensure_future(manager.acommit(session))
        await started.wait()
        commit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await commit
        assert record_of(store.memory, "id0") == stored  # the write never happened: nothing half-written
        assert session.closed
        with pytest.raises(sessions.SessionClosedError):
            session["n"] = 3

    asyncio.run(scenario())


# Under uvicorn: 100 concurrent requests on one event loop, no thread ######################################


def counting_app(manager: sessions.SessionManager) -> Any:
    app = FastAPI()
    app.add_middleware(sessions.ASGISessionMiddleware, manager=manager)

    @app.get("/count")
    async def count(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    return app


def test_an_async_store_serves_100_concurrent_requests_on_the_event_loop_with_no_thread():
    users = 100
    store = AsyncMemoryStore(clock=__import__("time").time)
    threads_seen: List[int] = []

    async def all_in_flight(method: str) -> None:
        """Every call waits until all 100 requests' calls are in flight (at most 10 s): only requests
        served at the same time on the one loop can pass."""
        threads_seen.append(threading.active_count())
        for _ in range(1000):
            if store.in_flight >= users:
                break
            await asyncio.sleep(0.01)

    store.gate = all_in_flight
    manager = sessions.SessionManager(SECRET, store=store, cookie={"max_age": 60})
    with serve_asgi(counting_app(manager)) as base:
        before = threading.active_count()

        async def round_of_requests(clients: List[httpx.AsyncClient]) -> List[str]:
            replies = await asyncio.gather(*(client.get(base + "/count") for client in clients))
            return [reply.text for reply in replies]

        async def both_rounds() -> Tuple[List[str], List[str]]:
            clients = [httpx.AsyncClient(timeout=30) for _ in range(users)]
            try:
                return await round_of_requests(clients), await round_of_requests(clients)
            finally:
                await asyncio.gather(*(client.aclose() for client in clients))

        first, second = asyncio.run(both_rounds())
    assert first == ["1"] * users and second == ["2"] * users
    assert store.calls.count("set") == store.calls.count("get") == store.calls.count("update") == users
    assert store.max_in_flight == users  # all 100 at once
    assert store.threads == {LOOP_THREAD}  # every store call on the event loop's own thread
    assert max(threads_seen) == before  # and not one thread more while they ran
