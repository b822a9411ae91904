"""End-to-end tests of the adapters (SPEC sections 2, 6, 7, 9, 10) over real sockets.

Servers: ``http.server.ThreadingHTTPServer`` with ``SessionHandlerMixin`` and ``wsgiref.simple_server`` (threaded)
with ``SessionMiddleware``, both on 127.0.0.1 port 0 in a background thread. Clients: ``urllib.request`` with a
``CookieJar``, ``http.client`` / raw sockets where exact headers matter, and curl.

Most tests run one small site (``site`` below) on both adapters: the site is written once against a tiny
request/response shim and translated to each adapter, so every behaviour is checked through both paths.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import logging
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, List, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import pytest

import sessions
from conftest import Clock, RecordingStore
from conftest import sid_of as _sid_of

SECRET = "adapter test secret"
ADAPTERS = ["http.server", "wsgi"]


# Test doubles ################################################################################################


@pytest.fixture
def clock() -> Clock:
    return Clock.near_real_time()  # so that urllib's cookie jar does not drop our cookies as expired


@pytest.fixture
def make_manager(store: RecordingStore, clock: Clock) -> Callable[..., sessions.SessionManager]:
    def make(**options: Any) -> sessions.SessionManager:
        return sessions.SessionManager(SECRET, store=store, clock=clock, **options)

    return make


@pytest.fixture
def manager(make_manager) -> sessions.SessionManager:
    return make_manager()


# The site: one request/response shim, translated to both adapters ###########################################


@dataclass
class Resp:
    body: str = ""
    status: int = 200
    headers: List[Tuple[str, str]] = field(default_factory=list)
    error: bool = False  # http.server: answer with send_error(status); WSGI: a plain start_response(status)
    after: Optional[Callable[["Req"], str]] = None  # runs after the response started; its text ends the body


@dataclass
class Req:
    method: str
    path: str
    query: dict
    body: bytes
    ctx: "Server"
    _session: Callable[[], sessions.Session]

    @property
    def session(self) -> sessions.Session:
        return self._session()

    @property
    def form(self) -> dict:
        return dict(urllib.parse.parse_qsl(self.body.decode()))


def _try_late_write(session: sessions.Session) -> str:
    """Change the session after its response started; report what happened (it must be refused)."""
    try:
        session["late"] = True
    except sessions.SessionClosedError as exc:
        return f"closed: {exc}"
    return "late write accepted"


def site(req: Req) -> Resp:
    """The application every shared test talks to."""
    path = req.path
    if path == "/count":
        req.session["n"] = req.session.get("n", 0) + 1
        return Resp(str(req.session["n"]))
    if path == "/peek":
        return Resp(str(req.session.get("n", 0)))
    if path == "/plain":
        return Resp("no session here")
    if path == "/destroy":
        req.session.destroy()
        return Resp("destroyed")
    if path == "/login":
        req.session["who"] = req.query["who"]
        return Resp("hello " + req.query["who"])
    if path == "/whoami":
        return Resp(req.session.get("who", ""))
    if path == "/save":  # POST value=...
        req.session["value"] = req.form["value"]
        return Resp("saved")
    if path == "/write":  # POST value=..., then redirect; records what the store held once the response started
        req.session["value"] = req.form["value"]

        def seen_by_store(req: Req) -> str:
            req.ctx.events.append(req.ctx.store.data(req.session.id))
            return ""

        status = int(req.query.get("status", "303"))
        return Resp("see /read", status=status, headers=[("Location", "/read")], after=seen_by_store)
    if path == "/read":
        return Resp(req.session.get("value", ""))
    if path == "/late":
        req.session["early"] = True
        return Resp("early written; ", after=lambda req: _try_late_write(req.session))
    if path == "/late-first-touch":
        return Resp("untouched; ", after=lambda req: _try_late_write(req.session))
    if path == "/save-now":
        req.session["n"] = 1
        req.session.save()
        return Resp("saved now")
    if path == "/reload":
        req.session.reload()
        return Resp("reloaded")
    if path == "/unencodable":  # changed in place to something JSON cannot hold: found at commit
        req.session["items"] = []
        req.session["items"].append({"a set"})
        return Resp("never sent")
    if path == "/fail500":  # modify, then fail the request
        req.session["n"] = 999
        return Resp(status=500, error=True)
    if path == "/save-then-fail":  # what save() stored survives the failed request
        req.session["n"] = 1
        req.session.save()
        req.session["n"] = 2
        return Resp(status=503, error=True)
    if path == "/missing":  # modify, then answer 404 through the error path
        req.session["n"] = req.session.get("n", 0) + 1
        return Resp(status=404, error=True)
    if path.lower().startswith("/app"):  # cookie path scoping (path matching is case-sensitive)
        try:
            req.session["n"] = 1
        except sessions.SessionClosedError:
            return Resp("no session")
        return Resp("session")
    return Resp("no such page", status=404)


@dataclass
class Server:
    url: str
    host: str
    port: int
    store: Any
    events: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # tracebacks of exceptions that escaped to the server
    allow_errors: bool = False  # set by tests that make the server fail on purpose

    @property
    def error_text(self) -> str:
        return "".join(self.errors)


class _SiteHandler(sessions.SessionHandlerMixin, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 5  # an idle keep-alive connection cannot hold a thread (and the teardown) forever
    ctx: Server

    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass

    def do_GET(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        req = Req(self.command, url.path, dict(urllib.parse.parse_qsl(url.query)), body, self.ctx, lambda: self.session)
        resp = site(req)
        if resp.error:
            self.send_error(resp.status)
            return
        self.send_response(resp.status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        for name, value in resp.headers:
            self.send_header(name, value)
        data = resp.body.encode()
        if resp.after is None:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:  # the rest of the body is only known after the response started: delimit it by closing
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            self.wfile.write(data + resp.after(req).encode())

    do_POST = do_GET


def _wsgi_site(ctx: Server):
    def app(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        req = Req(environ["REQUEST_METHOD"], environ["PATH_INFO"], query, body, ctx, lambda: environ["sessions.session"])
        resp = site(req)
        status = f"{resp.status} {HTTPStatus(resp.status).phrase}"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *resp.headers])
        if resp.after is None:
            return [resp.body.encode()]

        def body_then_after():
            yield resp.body.encode()
            yield resp.after(req).encode()

        return body_then_after()

    return app


class _ErrorSink:
    """What wsgiref prints tracebacks to: collected instead of cluttering the test output."""

    def __init__(self, errors: list) -> None:
        self.errors = errors

    def write(self, text: str) -> None:
        self.errors.append(text)

    def flush(self) -> None:
        pass


class _TestHTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread: nothing leaks past a test
    errors: list

    def handle_error(self, request, client_address):
        self.errors.append(traceback.format_exc())


class _TestWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = False
    errors: list


class _QuietWSGIHandler(WSGIRequestHandler):
    timeout = 5

    def log_message(self, format, *args):  # noqa: A002
        pass

    def get_stderr(self):
        return _ErrorSink(self.server.errors)


@pytest.fixture
def serve(store):
    """Start servers running ``site``: ``serve(adapter, manager, wsgi_app=None, outer=None) -> Server``.

    ``wsgi_app`` replaces the site with a raw WSGI app (still wrapped in SessionMiddleware); ``outer`` wraps
    the middleware (to fake what a WSGI server puts in the environ). Every server is shut down and its
    threads joined at teardown; a thread still alive afterwards fails the test."""
    threads_before = set(threading.enumerate())
    running = []

    def start(adapter, manager, *, wsgi_app=None, outer=None) -> Server:
        ctx = Server("", "", 0, store)
        if adapter == "http.server":
            handler = type("Handler", (_SiteHandler,), {
                "session_manager": manager, "ctx": ctx,
            })
            httpd = _TestHTTPServer(("127.0.0.1", 0), handler)
        else:
            app = sessions.SessionMiddleware(wsgi_app or _wsgi_site(ctx), manager)
            httpd = _TestWSGIServer(("127.0.0.1", 0), _QuietWSGIHandler)
            httpd.set_app(outer(app) if outer else app)
        httpd.errors = ctx.errors
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        thread.start()
        running.append((httpd, thread, ctx))
        ctx.host, ctx.port = httpd.server_address[:2]
        ctx.url = f"http://{ctx.host}:{ctx.port}"
        return ctx

    yield start
    for httpd, thread, _ in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    for _, _, ctx in running:
        assert ctx.allow_errors or not ctx.errors, "the server failed:\n" + ctx.error_text
    leaked = [t for t in threading.enumerate() if t not in threads_before]
    assert not leaked, f"threads left running: {leaked}"


# Clients ####################################################################################################


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: str
    url: str = ""

    @property
    def set_cookies(self) -> List[str]:
        return self.headers.get_all("Set-Cookie") or []

    @property
    def cookie(self) -> str:
        """The ``name=value`` pair of the one Set-Cookie of this response."""
        assert len(self.set_cookies) == 1, self.set_cookies
        return self.set_cookies[0].split(";", 1)[0]


class Browser:
    """urllib with a cookie jar (and no proxy from the environment)."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar)
        )

    def open(self, url: str, data: Optional[dict] = None) -> Response:
        body = None if data is None else urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(url, data=body)
        try:
            with self.opener.open(request, timeout=5) as r:
                return Response(r.status, r.headers, r.read().decode(), r.url)
        except urllib.error.HTTPError as e:
            with e:
                return Response(e.code, e.headers, e.read().decode(), e.url)

    @property
    def cookies(self) -> dict:
        return {c.name: c.value for c in self.jar}


def raw(srv: Server, path: str, headers=()) -> Response:
    """One GET over http.client with exactly ``headers`` (repeats allowed; values may be bytes)."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        r = conn.getresponse()
        return Response(r.status, r.headers, r.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def sid_of(cookie_pair: str) -> str:
    """The session id inside a ``sid=s%3A<id>.<mac>`` pair (checked against the secret)."""
    return _sid_of(cookie_pair, SECRET)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll for something a server thread does after the client already has its response."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def read_head(f) -> Tuple[int, http.client.HTTPMessage]:
    """Status code and headers of one response read from a socket file."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1."), status_line
    return int(status_line.split()[1]), http.client.parse_headers(f)


def read_response(f) -> Response:
    status, headers = read_head(f)
    return Response(status, headers, f.read(int(headers["Content-Length"])).decode())


@pytest.fixture(params=ADAPTERS)
def adapter(request) -> str:
    return request.param


# Both adapters ###############################################################################################


def test_cookie_round_trip_with_cookie_jar(adapter, serve, manager, store):
    srv = serve(adapter, manager)
    browser = Browser()

    first = browser.open(srv.url + "/count")
    assert (first.status, first.body) == (200, "1")
    assert len(first.set_cookies) == 1
    assert first.set_cookies[0].startswith("sid=s%3A")
    sid = sid_of(first.cookie)
    assert store.data(sid) == {"n": 1}

    second = browser.open(srv.url + "/count")  # loaded and modified, no max_age: no cookie (SPEC 5)
    assert (second.body, second.set_cookies) == ("2", [])
    unchanged = browser.open(srv.url + "/peek")  # loaded and unmodified: touched, no cookie
    assert (unchanged.body, unchanged.set_cookies) == ("2", [])
    assert store.data(sid) == {"n": 2}
    assert store.calls[-1] == ("touch", sid)
    assert list(browser.cookies) == ["sid"]


@pytest.mark.parametrize("status", [302, 303])
def test_post_redirect_get_sees_the_saved_session(adapter, serve, manager, store, status):
    srv = serve(adapter, manager)
    browser = Browser()

    response = browser.open(srv.url + f"/write?status={status}", data={"value": "hello"})

    assert response.url == srv.url + "/read"  # urllib followed the redirect...
    assert (response.status, response.body) == (200, "hello")  # ...and the GET saw the write
    assert srv.events == [{"value": "hello"}]  # stored already when the redirect response had started


def test_destroy_expires_the_cookie_and_next_request_is_new(adapter, serve, manager, store):
    srv = serve(adapter, manager)
    browser = Browser()
    old_sid = sid_of(browser.open(srv.url + "/count").cookie)

    destroyed = browser.open(srv.url + "/destroy")

    assert destroyed.status == 200
    assert len(destroyed.set_cookies) == 1
    clearing = destroyed.set_cookies[0]
    assert clearing.startswith("sid=;") and "Max-Age=0" in clearing and "Path=/" in clearing
    assert "Expires=Thu, 01 Jan 1970 00:00:00 GMT" in clearing
    assert len(browser.jar) == 0
    assert len(store) == 0

    fresh = browser.open(srv.url + "/count")
    assert fresh.body == "1"
    assert sid_of(fresh.cookie) != old_sid


def test_write_after_response_started_raises(adapter, serve, manager, store):
    srv = serve(adapter, manager)

    response = raw(srv, "/late")

    assert response.status == 200
    assert response.body.startswith("early written; closed: ")
    assert "committed when the response started" in response.body
    assert store.data(sid_of(response.cookie)) == {"early": True}  # the early write was kept, the late one refused


def test_session_first_touched_after_response_started_is_read_only(adapter, serve, manager, store):
    srv = serve(adapter, manager)

    response = raw(srv, "/late-first-touch")

    assert response.status == 200
    assert response.body.startswith("untouched; closed: ")
    assert response.set_cookies == []
    assert len(store) == 0


@pytest.mark.parametrize("path, failing", [("/save-now", "set"), ("/destroy", "destroy"), ("/reload", "get")])
def test_store_failure_in_a_session_method_is_a_500(adapter, serve, manager, store, path, failing):
    srv = serve(adapter, manager)
    srv.allow_errors = True
    store.fail = {failing}

    response = raw(srv, path)

    assert (response.status, response.set_cookies) == (500, [])
    assert len(store) == 0
    store.fail = set()
    assert raw(srv, "/count").status == 200


@pytest.mark.parametrize("failing", ["get", "set", "touch"])
def test_store_failure_is_a_clean_500(adapter, serve, manager, store, failing):
    srv = serve(adapter, manager)
    browser = Browser()
    assert browser.open(srv.url + "/count").body == "1"
    sid = sid_of(next(f"sid={v}" for v in browser.cookies.values()))
    store.fail = {failing}
    srv.allow_errors = True

    failed = browser.open(srv.url + ("/peek" if failing == "touch" else "/count"))

    assert failed.status == 500
    assert failed.set_cookies == []
    assert wait_for(lambda: "StoreError" in srv.error_text)  # http.server reports it after the 500 is out
    assert store.data(sid) == {"n": 1}
    if failing == "set":  # a new session that cannot be stored gets no cookie
        newcomer = Browser()
        assert newcomer.open(srv.url + "/count").status == 500
        assert len(newcomer.jar) == 0
        assert store.ids() == [sid]

    store.fail = set()  # the server keeps serving
    assert browser.open(srv.url + "/count").body == "2"


def test_unencodable_value_at_commit_is_a_500(adapter, serve, manager, store):
    srv = serve(adapter, manager)
    srv.allow_errors = True

    response = raw(srv, "/unencodable")

    assert (response.status, response.set_cookies) == (500, [])
    assert "never sent" not in response.body
    assert len(store) == 0
    assert wait_for(lambda: "SerializationError" in srv.error_text and "'items'" in srv.error_text)


def test_5xx_response_does_not_save_changes(adapter, serve, manager, store):
    srv = serve(adapter, manager)
    browser = Browser()
    sid = sid_of(browser.open(srv.url + "/count").cookie)

    failed = browser.open(srv.url + "/fail500")
    assert (failed.status, failed.set_cookies) == (500, [])
    assert store.data(sid) == {"n": 1}
    assert browser.open(srv.url + "/peek").body == "1"

    newcomer = raw(srv, "/fail500")  # a new session modified by a failed request is neither stored nor sent
    assert (newcomer.status, newcomer.set_cookies) == (500, [])
    assert store.ids() == [sid]


def test_5xx_response_keeps_what_save_stored(adapter, serve, manager, store):
    srv = serve(adapter, manager)

    response = raw(srv, "/save-then-fail")

    assert response.status == 503
    assert store.data(sid_of(response.cookie)) == {"n": 1}  # the saved state, and its cookie, not the later change


def test_concurrent_clients_keep_their_own_sessions(adapter, serve, manager, store):
    srv = serve(adapter, manager)
    browsers = [Browser() for _ in range(8)]
    results: dict = {}

    def visit(browser: Browser) -> None:
        results[browser] = [browser.open(srv.url + "/count").body for _ in range(10)]

    threads = [threading.Thread(target=visit, args=(b,)) for b in browsers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert all(results[b] == [str(i) for i in range(1, 11)] for b in browsers), results
    assert sorted(store.data(sid) == {"n": 10} for sid in store.ids()) == [True] * 8


def test_error_response_path_still_commits(adapter, serve, manager, store):
    """http.server: send_error(404) goes through end_headers; WSGI: a plain 404 start_response."""
    srv = serve(adapter, manager)
    browser = Browser()

    missing = browser.open(srv.url + "/missing")

    assert missing.status == 404
    assert store.data(sid_of(missing.cookie)) == {"n": 1}
    assert browser.open(srv.url + "/peek").body == "1"


def test_request_that_never_touches_the_session(adapter, serve, manager, store):
    srv = serve(adapter, manager)
    browser = Browser()
    browser.open(srv.url + "/count")
    calls_before = list(store.calls)

    for client in (Browser(), browser):  # without and with a session cookie
        response = client.open(srv.url + "/plain")
        assert (response.status, response.body) == (200, "no session here")
        assert response.set_cookies == []
        assert response.headers.get_all("Vary") is None
        assert response.headers.get("Cache-Control") is None

    assert store.calls == calls_before  # lazy: not even a get
    assert len(store) == 1


def test_cache_safety_headers(adapter, serve, manager):
    srv = serve(adapter, manager)
    browser = Browser()

    read_only = browser.open(srv.url + "/peek")  # reads a new session, sets nothing
    assert read_only.headers.get_all("Vary") == ["Cookie"]
    assert read_only.set_cookies == [] and read_only.headers.get("Cache-Control") is None

    setting = browser.open(srv.url + "/count")
    assert len(setting.set_cookies) == 1
    assert setting.headers.get_all("Cache-Control") == ['no-cache="Set-Cookie"']
    assert setting.headers.get_all("Vary") == ["Cookie"]

    loaded = browser.open(srv.url + "/peek")
    assert loaded.headers.get_all("Vary") == ["Cookie"]
    assert loaded.set_cookies == [] and loaded.headers.get("Cache-Control") is None


def test_expired_session_starts_afresh(adapter, serve, make_manager, clock, store):
    srv = serve(adapter, make_manager(cookie={"max_age": 60}))
    browser = Browser()
    first = browser.open(srv.url + "/count")
    assert "Max-Age=60" in first.set_cookies[0]

    clock.advance(59)
    assert browser.open(srv.url + "/count").body == "2"  # still alive; the expiry slides to now + 60
    clock.advance(59)
    assert browser.open(srv.url + "/count").body == "3"
    clock.advance(61)
    expired = browser.open(srv.url + "/count")

    assert expired.body == "1"
    assert sid_of(expired.cookie) != sid_of(first.cookie)


@pytest.fixture
def valid_cookie(adapter, serve, manager):
    """A server, and the ``sid=...`` pair of a session whose counter is at 1."""
    srv = serve(adapter, manager)
    return srv, raw(srv, "/count").cookie


MALFORMED = {
    "garbage": "%%%; {sid}; \x01\x02junk; ===",
    "non-ascii": b"caf\xc3\xa9=cr\xe8me; \xff\xfe=\x80; {sid}; \xe9t\xe9",
    "quotes": 'q="unterminated; json={"a": [1, "b"]}; {sid}; e="',
    "empty segments": ";;; ;{sid};;",
    "nameless": "=x; =; {sid}; =s%3Aforged",
    "percent garbage": "p=%zz%; u=%E0%A4%A; {sid}",
    "spaces and tabs": " \t {sid} \t ;  a b = c d ",
    "nbsp name": b"\xa0sid=s%3Afake.mac; {sid}",
    "comma joined": "a=1, {sid}, b=2",
    "10 KB header": "{sid}; pad=" + "x" * 10_000,
    "quoted value": "{quoted}",
    "raw value": "{raw}",
}


def _fill(template, cookie: str):
    name, value = cookie.split("=", 1)
    values = {"sid": cookie, "quoted": f'{name}="{value}"', "raw": f"{name}={urllib.parse.unquote(value)}"}
    if isinstance(template, bytes):
        return template.replace(b"{sid}", cookie.encode())
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


@pytest.mark.parametrize("template", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_cookie_header_keeps_the_valid_session(valid_cookie, template):
    srv, cookie = valid_cookie

    response = raw(srv, "/count", [("Cookie", _fill(template, cookie))])

    assert (response.status, response.body) == (200, "2")


@pytest.mark.parametrize("template", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_cookie_header_alone_is_a_new_session(valid_cookie, template):
    srv, cookie = valid_cookie
    header = _fill(template, "sid=s%3Aforged.bm90IGEgbWFj")

    response = raw(srv, "/count", [("Cookie", header)])

    assert (response.status, response.body) == (200, "1")
    assert len(response.set_cookies) == 1


def test_session_cookie_past_the_header_size_limit_is_ignored(valid_cookie):
    srv, cookie = valid_cookie

    response = raw(srv, "/count", [("Cookie", "pad=" + "x" * sessions.MAX_COOKIE_HEADER + "; " + cookie)])

    assert (response.status, response.body) == (200, "1")


@pytest.mark.parametrize("position", [0, 1, 2])
def test_several_cookie_headers_are_read_together(valid_cookie, position):
    srv, cookie = valid_cookie
    values = ["a=1; b=2", "c=3", "=junk;;"]
    values.insert(position, cookie)

    response = raw(srv, "/count", [("Cookie", value) for value in values])

    assert (response.status, response.body) == (200, "2")


@pytest.mark.parametrize("first", ["forged", "unsigned", "other secret", "stale"])
def test_first_valid_session_cookie_wins(valid_cookie, store, first):
    srv, cookie = valid_cookie
    if first == "stale":  # correctly signed, but its record was destroyed
        stale = raw(srv, "/count").cookie
        raw(srv, "/destroy", [("Cookie", stale)])
    else:
        value = {
            "forged": "s%3Aforged.bm90IGEgbWFj",
            "unsigned": "s%3A" + sid_of(cookie),
            "other secret": urllib.parse.quote("s:" + sessions.sign(sid_of(cookie), "another secret"), safe=""),
        }[first]
        stale = "sid=" + value

    response = raw(srv, "/count", [("Cookie", f"{stale}; {cookie}")])

    assert (response.status, response.body, response.set_cookies) == (200, "2", [])
    assert store.data(sid_of(cookie)) == {"n": 2}


@pytest.mark.parametrize("path, has_session", [
    ("/app", True), ("/app/", True), ("/app/x", True), ("/application", False), ("/App/x", False),
])
def test_cookie_path_scoping(adapter, serve, make_manager, store, path, has_session):
    srv = serve(adapter, make_manager(cookie={"path": "/app"}))

    response = raw(srv, path)

    if has_session:
        assert response.body == "session"
        assert "Path=/app;" in response.set_cookies[0] + ";"
        assert len(store) == 1
    else:
        assert response.body == "no session"
        assert response.set_cookies == []
        assert len(store) == 0


@pytest.mark.parametrize("trust_proxy", [True, False])
def test_secure_auto_follows_trusted_forwarded_proto(adapter, serve, make_manager, trust_proxy):
    srv = serve(adapter, make_manager(cookie={"secure": "auto"}, trust_proxy=trust_proxy))

    https = raw(srv, "/count", [("X-Forwarded-Proto", "https")])
    plain = raw(srv, "/count")

    assert ("Secure" in https.set_cookies[0].split("; ")) is trust_proxy
    assert "Secure" not in plain.set_cookies[0].split("; ")


def test_secure_cookie_withheld_on_plain_http(adapter, serve, make_manager, store, caplog):
    srv = serve(adapter, make_manager(cookie={"secure": True}, trust_proxy=True))

    with caplog.at_level(logging.WARNING, logger="sessions"):
        plain = raw(srv, "/count")
    https = raw(srv, "/count", [("X-Forwarded-Proto", "https")])

    assert (plain.status, plain.set_cookies) == (200, [])
    assert any("not sending the Secure session cookie" in r.getMessage() for r in caplog.records)
    assert "Secure" in https.set_cookies[0].split("; ")


# http.server only ###########################################################################################


@pytest.fixture
def http_server(serve, manager) -> Server:
    return serve("http.server", manager)


def test_expect_100_continue_does_not_commit(http_server, store):
    body = b"value=sent+after+100"
    with socket.create_connection((http_server.host, http_server.port), timeout=5) as sock, sock.makefile("rb") as f:
        sock.sendall(
            b"POST /save HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        interim, interim_headers = read_head(f)
        sock.sendall(body)
        final = read_response(f)

    assert interim == 100
    assert interim_headers.get_all("Set-Cookie") is None
    assert (final.status, final.body) == (200, "saved")
    assert store.data(sid_of(final.cookie)) == {"value": "sent after 100"}


def test_keep_alive_requests_get_their_own_sessions(http_server):
    alice = raw(http_server, "/login?who=alice").cookie
    bob = raw(http_server, "/login?who=bob").cookie
    conn = http.client.HTTPConnection(http_server.host, http_server.port, timeout=5)
    try:
        seen, sockets = [], set()
        for cookie in (alice, bob, None, alice):
            conn.request("GET", "/whoami", headers={"Cookie": cookie} if cookie else {})
            response = conn.getresponse()
            seen.append(response.read().decode())
            assert response.getheader("Set-Cookie") is None
            sockets.add(id(conn.sock))
    finally:
        conn.close()

    assert seen == ["alice", "bob", "", "alice"]
    assert len(sockets) == 1  # one connection served all four


def test_keep_alive_error_before_parsing_does_not_repeat_previous_cookie(http_server):
    """A 414 (request line too long) on a kept-alive connection is sent before parse_request: it must not
    carry the previous request's Set-Cookie (behind a connection-pooling proxy that is another visitor)."""
    with socket.create_connection((http_server.host, http_server.port), timeout=5) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /count HTTP/1.1\r\nHost: test\r\n\r\n")
        first = read_response(f)
        sock.sendall(b"GET /" + b"a" * 65_600 + b" HTTP/1.1\r\nHost: test\r\n\r\n")
        too_long = read_response(f)

    assert len(first.set_cookies) == 1
    assert too_long.status == 414
    assert too_long.set_cookies == []
    assert too_long.headers.get("Vary") is None


def test_curl_round_trip_with_cookie_file(http_server, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    jar = tmp_path / "cookies.txt"

    def run() -> str:
        done = subprocess.run(
            [curl, "-sS", "--noproxy", "*", "--max-time", "5", "-c", str(jar), "-b", str(jar), http_server.url + "/count"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return done.stdout

    assert [run(), run(), run()] == ["1", "2", "3"]
    lines = [line.split("\t") for line in jar.read_text().splitlines() if "\tsid\t" in line]
    assert len(lines) == 1
    assert lines[0][0] == "#HttpOnly_127.0.0.1"  # curl kept the HttpOnly host-only cookie
    assert lines[0][6].startswith("s%3A")


# WSGI only ##################################################################################################


def _session_app(body: Callable[[dict, Callable, sessions.Session], Any]):
    def app(environ, start_response):
        return body(environ, start_response, environ["sessions.session"])

    return app


def test_wsgi_error_page_after_start_response_repeats_the_cookie(serve, manager, store):
    def app(environ, start_response, session):
        session["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("rendering failed")
        except RuntimeError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]

    srv = serve("wsgi", manager, wsgi_app=_session_app(app))
    response = raw(srv, "/")

    assert (response.status, response.body) == (500, "error page")
    assert store.data(sid_of(response.cookie)) == {"n": 1}  # written at the first start_response
    assert response.headers.get_all("Cache-Control") == ['no-cache="Set-Cookie"']


def test_wsgi_legacy_write_callable(serve, manager, store):
    def app(environ, start_response, session):
        session["n"] = 5
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written; ")
        return [_try_late_write(session).encode()]

    srv = serve("wsgi", manager, wsgi_app=_session_app(app))
    response = raw(srv, "/")

    assert response.status == 200
    assert response.body.startswith("written; closed: ")
    assert store.data(sid_of(response.cookie)) == {"n": 5}


def test_wsgi_generator_app_starts_response_lazily(serve, manager, store):
    steps = []

    def app(environ, start_response):  # a generator: nothing runs until the server iterates it
        session = environ["sessions.session"]
        steps.append("started")
        session["n"] = 7
        start_response("200 OK", [("Content-Type", "text/plain")])
        steps.append(store.data(session.id))
        yield _try_late_write(session).encode()

    srv = serve("wsgi", manager, wsgi_app=app)
    response = raw(srv, "/")

    assert response.status == 200
    assert response.body.startswith("closed: ")
    assert steps == ["started", {"n": 7}]  # saved inside start_response, before the first body byte
    assert store.data(sid_of(response.cookie)) == {"n": 7}


@pytest.mark.parametrize("scheme, secure", [("https", True), ("http", False)])
def test_wsgi_url_scheme_decides_secure_auto(serve, make_manager, scheme, secure):
    def outer(app):
        def with_scheme(environ, start_response):
            environ["wsgi.url_scheme"] = scheme
            return app(environ, start_response)

        return with_scheme

    srv = serve("wsgi", make_manager(cookie={"secure": "auto"}), outer=outer)
    response = raw(srv, "/count")

    assert ("Secure" in response.set_cookies[0].split("; ")) is secure


@pytest.mark.parametrize(
    "raw_uri, in_scope",
    [("/app/x?q=1", True), ("/app%2Fx", False)],  # a browser path-matches the path as sent, not decoded
)
def test_wsgi_path_matches_the_raw_uri_when_the_server_gives_it(raw_uri, in_scope):
    manager = sessions.SessionManager("k", cookie={"path": "/app"})
    seen = {}

    def app(environ, start_response):
        session = environ["sessions.session"]
        try:
            session["n"] = 1
            seen["stored"] = True
        except sessions.SessionClosedError:
            seen["stored"] = False
        start_response("200 OK", [])
        return [b""]

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/app/x", "SCRIPT_NAME": "", "RAW_URI": raw_uri,
               "wsgi.url_scheme": "http"}
    headers = []
    sessions.SessionMiddleware(app, manager)(environ, lambda status, h, exc_info=None: headers.extend(h))
    assert seen["stored"] is in_scope
    assert any(name == "Set-Cookie" for name, _ in headers) is in_scope


def test_wsgi_session_first_read_after_the_response_started_is_never_committed():
    store = RecordingStore()
    manager = sessions.SessionManager("k", store=store, cookie={"max_age": 60})
    seeded = manager.open(None)
    seeded["n"] = 1
    cookie = manager.commit(seeded)[0].split(";")[0]
    store.reset()

    def app(environ, start_response):
        start_response("200 OK", [])  # the response starts before the session is used...
        session = environ["sessions.session"]
        assert session["n"] == 1  # ...reading it later is fine
        with pytest.raises(sessions.SessionClosedError):
            session["n"] = 2
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            start_response("400 Bad Request", [], sys.exc_info())  # an error page replaces it
        return [b""]

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_COOKIE": cookie, "wsgi.url_scheme": "http"}
    headers = []
    sessions.SessionMiddleware(app, manager)(environ, lambda status, h, exc_info=None: headers.extend(h))
    assert [m for m, _ in store.calls if m != "get"] == []  # nothing was stored or touched after the response started
    assert not any(name == "Set-Cookie" for name, _ in headers)
