"""ASGISessionMiddleware as a drop-in for Starlette's SessionMiddleware (issue 15, item 5).

The first tests are Starlette's own session tests (tests/middleware/test_session.py), run as they are
written there with only the import changed, through Starlette's TestClient; then the keyword mapping and
its errors; then a real uvicorn server with a urllib cookie jar, for MemoryStore and SQLiteStore.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.request
from typing import Any, Dict

import pytest
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import sessions
from sessions import ASGISessionMiddleware as SessionMiddleware  # the one line a migration changes
from test_frameworks import serve_asgi


def view_session(request: Request) -> JSONResponse:
    return JSONResponse({"session": request.session})


async def update_session(request: Request) -> JSONResponse:
    data = await request.json()
    request.session.update(data)
    return JSONResponse({"session": request.session})


async def clear_session(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse({"session": request.session})


async def dict_operations(request: Request) -> JSONResponse:
    """What Starlette's own Session (a dict) allows: |=, LIFO popitem, setdefault, pop."""
    session = request.session
    session |= {"first": 1, "second": 2}
    session.setdefault("third", 3)
    popped = session.popitem()
    session.pop("missing", None)
    return JSONResponse({"popped": list(popped), "session": session, "is_dict": isinstance(session, dict)})


ROUTES = [
    Route("/view_session", endpoint=view_session),
    Route("/update_session", endpoint=update_session, methods=["POST"]),
    Route("/clear_session", endpoint=clear_session, methods=["POST"]),
    Route("/dict_operations", endpoint=dict_operations, methods=["POST"]),
]


def app_with(**options: Any) -> Starlette:
    return Starlette(routes=ROUTES, middleware=[Middleware(SessionMiddleware, **options)])


# Starlette's own tests ####################################################################################


def test_session() -> None:
    client = TestClient(app_with(secret_key="example"))
    assert client.get("/view_session").json() == {"session": {}}
    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    max_age = re.search(r"; Max-Age=([0-9]+);", response.headers["set-cookie"])
    assert max_age is not None and int(max_age[1]) == 14 * 24 * 3600
    assert client.get("/view_session").json() == {"session": {"some": "data"}}
    assert client.post("/clear_session").json() == {"session": {}}
    assert client.get("/view_session").json() == {"session": {}}


def test_session_expires_with_max_age_0() -> None:
    client = TestClient(app_with(secret_key="example", max_age=0))
    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert client.get("/view_session").json() == {"session": {}}  # nothing outlives its response


def test_secure_session() -> None:
    app = app_with(secret_key="example", https_only=True)
    secure_client = TestClient(app, base_url="https://testserver")
    unsecure_client = TestClient(app, base_url="http://testserver")

    response = unsecure_client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert "set-cookie" not in response.headers  # a Secure cookie is not sent over plain HTTP
    assert unsecure_client.get("/view_session").json() == {"session": {}}

    response = secure_client.post("/update_session", json={"some": "data"})
    assert "; Secure" in response.headers["set-cookie"]
    assert secure_client.get("/view_session").json() == {"session": {"some": "data"}}
    assert secure_client.post("/clear_session").json() == {"session": {}}
    assert secure_client.get("/view_session").json() == {"session": {}}


def test_session_cookie_subpath() -> None:
    second_app = app_with(secret_key="example", path="/second_app")
    app = Starlette(routes=[Mount("/second_app", app=second_app)])
    client = TestClient(app, base_url="http://testserver/second_app")
    response = client.post("/update_session", json={"some": "data"})
    assert response.status_code == 200
    assert "Path=/second_app;" in response.headers["set-cookie"]
    assert client.get("/view_session").json() == {"session": {"some": "data"}}


def test_invalid_session_cookie() -> None:
    client = TestClient(app_with(secret_key="example"))
    assert client.post("/update_session", json={"some": "data"}).json() == {"session": {"some": "data"}}
    client.cookies.clear()
    client.cookies.set("session", "invalid")
    assert client.get("/view_session").json() == {"session": {}}


def test_session_cookie_without_max_age_ends_with_the_browser() -> None:
    client = TestClient(app_with(secret_key="example", max_age=None))
    response = client.post("/update_session", json={"some": "data"})
    assert "max-age" not in response.headers["set-cookie"].lower()
    assert "expires" not in response.headers["set-cookie"].lower()
    assert client.get("/view_session").json() == {"session": {"some": "data"}}


def test_domain_cookie() -> None:
    client = TestClient(app_with(secret_key="example", domain=".example.com"), base_url="http://testserver.local")
    response = client.post("/update_session", json={"some": "data"})
    assert "Domain=.example.com" in response.headers["set-cookie"]


# The keyword mapping ######################################################################################


def test_defaults_are_starlettes() -> None:
    middleware = SessionMiddleware(view_session, secret_key="example")
    manager, cookie = middleware.manager, middleware.manager.cookie_options
    assert manager.name == "session"
    assert (cookie.max_age, cookie.path, cookie.same_site, cookie.secure, cookie.domain, cookie.http_only) == (
        14 * 24 * 3600, "/", "Lax", False, None, True)
    assert isinstance(manager.store, sessions.MemoryStore)


def test_every_keyword_maps_to_the_cookie(tmp_path) -> None:
    store = sessions.SQLiteStore(str(tmp_path / "s.db"))
    middleware = SessionMiddleware(
        view_session, secret_key=Secret("example"), session_cookie="__Secure-app", max_age=60, path="/app",
        same_site="strict", https_only=True, domain="example.com", partitioned=True, store=store)
    manager, cookie = middleware.manager, middleware.manager.cookie_options
    assert manager.name == "__Secure-app" and manager.store is store
    assert (cookie.max_age, cookie.path, cookie.same_site, cookie.secure, cookie.domain, cookie.partitioned) == (
        60, "/app", "Strict", True, "example.com", True)
    assert sessions.unsign(sessions.sign("x", "example"), "example") == "x"
    assert manager._keys[0].digest() == sessions._keys("example")[0].digest()  # Secret("example") signs as "example"


def test_the_secret_key_may_come_first_as_in_starlette() -> None:
    assert SessionMiddleware(view_session, "example").manager.name == "session"


def test_a_manager_keeps_working_positionally_and_by_keyword() -> None:
    manager = sessions.SessionManager("example")
    assert SessionMiddleware(view_session, manager).manager is manager
    assert SessionMiddleware(view_session, manager=manager).manager is manager


@pytest.mark.parametrize("options, word", [
    ({"manager": sessions.SessionManager("m"), "max_age": 60}, "max_age"),
    ({"manager": sessions.SessionManager("m"), "secret_key": "x"}, "secret_key"),
    ({"manager": sessions.SessionManager("m"), "store": sessions.MemoryStore()}, "store"),
    ({}, "secret_key"),
    ({"secret_key": "x", "max_agee": 60}, "max_agee"),
    ({"secret_key": "x", "same_site": "sometimes"}, "same_site"),
    ({"secret_key": "x", "same_site": "none"}, "secure"),
    ({"secret_key": "x", "https_only": "yes"}, "https_only"),
    ({"secret_key": "x", "max_age": -1}, "max_age"),
])
def test_contradictions_and_mistakes_are_configuration_errors(options: Dict[str, Any], word: str) -> None:
    with pytest.raises(sessions.ConfigurationError, match=word):
        SessionMiddleware(view_session, **options)


# Under a real server ######################################################################################


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def call(self, path: str, data: Any = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(self.base + path, data=body, method="GET" if data is None else "POST")
        with self.opener.open(request, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path) -> sessions.Store:
    return sessions.MemoryStore() if request.param == "memory" else sessions.SQLiteStore(str(tmp_path / "s.db"))


def test_the_drop_in_under_uvicorn(store: sessions.Store) -> None:
    with serve_asgi(app_with(secret_key="example", store=store)) as base:
        browser = Browser(base)
        assert browser.call("/view_session") == {"session": {}}
        assert len(store) == 0  # an empty new session stores nothing
        assert browser.call("/update_session", {"user": "ada", "cart": [1, 2]}) == {
            "session": {"user": "ada", "cart": [1, 2]}}
        assert [cookie.name for cookie in browser.jar] == ["session"]
        assert browser.call("/view_session") == {"session": {"user": "ada", "cart": [1, 2]}}
        assert browser.call("/dict_operations", {}) == {
            "popped": ["third", 3], "session": {"user": "ada", "cart": [1, 2], "first": 1, "second": 2},
            "is_dict": True}
        assert browser.call("/view_session") == {"session": {"user": "ada", "cart": [1, 2], "first": 1, "second": 2}}
        assert len(store) == 1
