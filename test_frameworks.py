"""Framework adapters (Flask, ASGI: Starlette and FastAPI, Django) under real servers, and the
core additions the adapters rely on (test_readme.py runs the README's framework recipes as written).

Each framework serves the same small site (fixtures/framework_sites.py) on a free 127.0.0.1 port: Flask under
werkzeug's server, Starlette and FastAPI under uvicorn (in a thread), Django under wsgiref in its own
process (Django's settings are process-wide). Clients are urllib with a cookie jar.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import sessions
from conftest import stop_process

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "fixtures"))
import framework_sites as sites  # noqa: E402

SERVER_START_TIMEOUT = 30.0


# Servers ##################################################################################################


def wait_for(condition: Callable[[], bool], timeout: float = SERVER_START_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """A werkzeug server in a thread; yields the base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="werkzeug", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


#: The name of the thread uvicorn's event loop runs in (store calls made inline run there).
LOOP_THREAD = "uvicorn-loop"


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """A uvicorn server (event loop in a thread), with the lifespan protocol on; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here, so no other process can take the port before uvicorn
    port = sock.getsockname()[1]
    ws = "websockets-sansio" if "websockets-sansio" in uvicorn.config.WS_PROTOCOLS else "websockets"
    # proxy_headers=False: uvicorn would otherwise apply X-Forwarded-Proto from 127.0.0.1 to scope["scheme"]
    # itself, and the tests check the adapter's own trust_proxy handling.
    config = uvicorn.Config(app, lifespan="on", ws=ws, proxy_headers=False, log_level="critical",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=LOOP_THREAD, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started or not thread.is_alive()), "uvicorn did not start"
        assert server.started, "uvicorn stopped while starting"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@contextlib.contextmanager
def serve_django() -> Iterator[str]:
    """The Django site in its own process (wsgiref on a port the OS picks, which it prints); stopped by its
    PID."""
    env = dict(os.environ, PORT="0", PYTHONPATH=HERE)
    process = spawn([sys.executable, os.path.join(HERE, "fixtures", "framework_sites.py"), "django"],
                    env=env, ready_line=True)
    try:
        port = ready_port(process)
        if port is None:
            fail_to_start(process, "the Django site")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)
        process.output.close()  # type: ignore[attr-defined]


def ready_port(process: subprocess.Popen, timeout: float = SERVER_START_TIMEOUT) -> Optional[int]:
    """The port of a ``ready <port>`` line on the process's stdout, waiting at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            break
        line = process.stdout.readline()
        if not line:  # the process exited
            return None
        if line.startswith("ready "):
            return int(line.split()[1])
    return None


def spawn(args: List[str], ready_line: bool = False, **options: Any) -> subprocess.Popen:
    """A server process whose output goes to a temporary file (a server that logs a lot, e.g. a traceback
    per 500, never blocks on a full pipe); with ``ready_line`` its stdout is a pipe, for ``ready_port``."""
    output = tempfile.TemporaryFile("w+")
    stdout = subprocess.PIPE if ready_line else output
    process = subprocess.Popen(args, stdout=stdout, stderr=output, text=True, **options)
    process.output = output  # type: ignore[attr-defined]
    return process


def output_of(process: subprocess.Popen) -> str:
    process.output.seek(0)  # type: ignore[attr-defined]
    return process.output.read()  # type: ignore[attr-defined]


def fail_to_start(process: subprocess.Popen, what: str) -> None:
    stop_process(process)
    pytest.fail(f"{what} did not start:\n{output_of(process)}")


# Clients ##################################################################################################


class Reply:
    def __init__(self, status: int, body: str, headers: Any) -> None:
        self.status, self.body, self.headers = status, body, headers

    @property
    def set_cookies(self) -> List[str]:
        return self.headers.get_all("Set-Cookie") or []


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None  # the 3xx reaches the caller as an HTTPError


class Browser:
    """urllib with a cookie jar; follows redirects (cookies set on the way are kept) unless told not to."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        cookies = urllib.request.HTTPCookieProcessor(self.jar)
        self.opener = urllib.request.build_opener(cookies)
        self.staying_opener = urllib.request.build_opener(cookies, _NoRedirect())

    def open(self, path: str, data: Optional[Dict[str, str]] = None, headers: Optional[Dict[str, str]] = None,
             follow: bool = True) -> Reply:
        body = None if data is None else urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        opener = self.opener if follow else self.staying_opener
        try:
            with opener.open(request, timeout=30) as response:
                return Reply(response.status, response.read().decode(), response.headers)
        except urllib.error.HTTPError as error:
            with error:
                return Reply(error.code, error.read().decode(), error.headers)

    @property
    def cookie(self) -> Optional[str]:
        """The session cookie's value as the browser holds it, or None."""
        values = [c.value for c in self.jar if c.name == "sid"]
        return values[0] if values else None

    @property
    def sid(self) -> Optional[str]:
        """The session id the browser's cookie names (unsigned), or None."""
        cookie = self.cookie
        if cookie is None:
            return None
        signed = urllib.parse.unquote(cookie)
        assert signed.startswith("s:")
        return signed[2:].rsplit(".", 1)[0]

    def stats(self) -> Dict[str, Any]:
        """The site's store (calls, records) via /stats, which never touches the session."""
        with urllib.request.urlopen(self.base + "/stats", timeout=30) as response:
            return json.loads(response.read())

    def reset(self, records: bool = True) -> None:
        """Forget the store's calls, and its records unless told otherwise; heal the store."""
        urllib.request.urlopen(self.base + "/reset" + ("" if records else "?records=0"), timeout=30).close()
        self.fail_store()

    def fail_store(self, *methods: str) -> None:
        """Make these store methods raise from now on (none: the store works again)."""
        query = urllib.parse.urlencode([("method", m) for m in methods])
        urllib.request.urlopen(self.base + "/fail?" + query, timeout=30).close()


FRAMEWORKS = ["flask", "starlette", "fastapi", "django"]
ASGI = ["starlette", "fastapi"]


@contextlib.contextmanager
def serve_site(framework: str, manager: Optional[sessions.SessionManager] = None) -> Iterator[str]:
    if framework == "django":
        with serve_django() as base:
            yield base
        return
    manager = manager or sites.make_manager(sites.SpyStore())
    if framework == "flask":
        with serve_wsgi(sites.flask_app(manager)) as base:
            yield base
    else:
        with serve_asgi(getattr(sites, f"{framework}_app")(manager)) as base:
            yield base


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[[str], str]]:
    """framework -> base URL of its site, started on first use, one per framework for the module."""
    with contextlib.ExitStack() as stack:
        started: Dict[str, str] = {}

        def base(framework: str) -> str:
            if framework not in started:
                started[framework] = stack.enter_context(serve_site(framework))
            return started[framework]

        yield base


@pytest.fixture(params=FRAMEWORKS)
def site(request, servers) -> Tuple[str, str]:
    """(framework, base URL)."""
    return request.param, servers(request.param)


@pytest.fixture
def browser(site) -> Browser:
    browser = Browser(site[1])
    browser.reset()
    return browser


# Every framework ##########################################################################################


def test_counter_counts_and_sends_the_cookie_once(browser):
    replies = [browser.open("/count") for _ in range(3)]
    assert [r.body for r in replies] == ["1", "2", "3"]
    assert [len(r.set_cookies) for r in replies] == [1, 0, 0]  # no rolling: loaded sessions send none
    assert browser.stats()["records"][browser.sid]["n"] == 3


def test_an_unused_session_sends_no_cookie_and_stores_nothing(browser):
    reply = browser.open("/plain")
    assert reply.body == "plain" and reply.set_cookies == []
    stats = browser.stats()
    assert stats["calls"] == [] and stats["records"] == {}


def test_a_flash_message_survives_one_redirect(browser):
    reply = browser.open("/flash")
    assert reply.body == "hello,again"  # written, then redirected: the redirect saw the saved session
    assert browser.open("/show").body == "none"  # consumed


def test_a_redirect_response_arrives_after_the_session_was_saved(browser):
    reply = browser.open("/flash", follow=False)
    assert reply.status == 303 and len(reply.set_cookies) == 1
    record = browser.stats()["records"][browser.sid]
    assert {"flashes", "_flashes", "_messages"} & set(record)  # each framework's key for its messages


def test_login_regenerates_the_id_and_keeps_the_data(browser):
    browser.open("/count")
    before = browser.sid
    assert browser.open("/login").body == "alice"
    after = browser.sid
    assert after != before
    records = browser.stats()["records"]
    assert before not in records  # the planted id is worthless after login
    assert records[after]["n"] == 1
    assert browser.open("/whoami").body == "alice"


def test_logout_deletes_the_stored_session_and_the_cookie(browser):
    browser.open("/login")
    sid = browser.sid
    browser.reset(records=False)
    assert browser.open("/logout").body == "bye"
    stats = browser.stats()
    assert "destroy" in stats["calls"] and sid not in stats["records"]
    assert browser.cookie is None  # nothing written after the flush: the response expired the cookie
    assert browser.open("/whoami").body == "anonymous"


def test_an_exception_gives_a_500_and_saves_nothing(browser):
    browser.open("/count")
    sid = browser.sid
    browser.reset(records=False)
    reply = browser.open("/boom")
    assert reply.status == 500 and reply.set_cookies == []
    stats = browser.stats()
    assert not {"set", "update", "touch"} & set(stats["calls"])
    assert stats["records"][sid].get("boom") is None and stats["records"][sid]["n"] == 1


@pytest.mark.parametrize("method", ["get", "update"])
def test_a_store_failure_gives_a_500_without_the_cookie(browser, method):
    browser.open("/count")  # a stored session: the next request loads it (get), changes it (update)
    browser.fail_store(method)
    try:
        reply = browser.open("/count")
    finally:
        browser.fail_store()
    assert reply.status == 500 and reply.set_cookies == []
    assert browser.stats()["records"][browser.sid]["n"] == 1


def test_an_exception_in_a_new_session_stores_nothing(browser):
    reply = browser.open("/boom")
    assert reply.status == 500 and reply.set_cookies == []
    assert browser.stats()["records"] == {}



# Flask ####################################################################################################


@pytest.fixture
def flask_browser(servers) -> Browser:
    browser = Browser(servers("flask"))
    browser.reset()
    return browser


def test_flask_view_that_never_reads_the_session_makes_no_store_call_even_with_a_cookie(flask_browser):
    flask_browser.open("/count")
    flask_browser.reset(records=False)
    reply = flask_browser.open("/plain")
    assert reply.set_cookies == [] and reply.headers.get("Vary") is None
    assert flask_browser.stats()["calls"] == []


def test_flask_permanent_alone_stores_nothing(flask_browser):
    reply = flask_browser.open("/permanent?on=1")
    assert reply.body == "True" and reply.set_cookies == []  # a lifetime is no reason to store a visitor
    assert flask_browser.stats()["records"] == {}


def test_flask_permanent_is_the_cookie_lifetime_not_a_data_key(flask_browser):
    lifetime = 31 * 86400  # Flask's default PERMANENT_SESSION_LIFETIME
    (cookie,) = flask_browser.open("/permanent?on=1&write=1").set_cookies
    assert f"Max-Age={lifetime}" in cookie
    record = flask_browser.stats()["records"][flask_browser.sid]
    assert "_permanent" not in record and record["cookie"]["originalMaxAge"] == lifetime * 1000
    assert flask_browser.open("/permanent?on=1").set_cookies == []  # unchanged: nothing to send
    (cookie,) = flask_browser.open("/permanent?on=0").set_cookies
    assert "Max-Age" not in cookie and "Expires" not in cookie  # a browser-session cookie again
    assert flask_browser.stats()["records"][flask_browser.sid]["cookie"]["originalMaxAge"] is None


def test_flask_test_client_session_transaction():
    """Flask's test client opens and saves the session through the interface too."""
    store = sites.SpyStore()
    client = sites.flask_app(sites.make_manager(store)).test_client()
    with client.session_transaction() as session:
        session["n"] = 41
    assert client.get("/count").text == "42"
    assert [record["n"] for record in store.stats()["records"].values()] == [42]


def test_flask_session_new_and_modified(flask_browser):
    assert json.loads(flask_browser.open("/state").body) == {"new": True, "permanent": False, "modified": False}
    flask_browser.open("/count")
    assert json.loads(flask_browser.open("/state").body)["new"] is False


# ASGI: Starlette and FastAPI ##############################################################################


@pytest.fixture(params=ASGI)
def asgi_framework(request) -> str:
    return request.param


def test_asgi_websocket_reads_the_session_of_its_handshake(asgi_framework):
    from websockets.sync.client import connect

    with serve_site(asgi_framework) as base:
        browser = Browser(base)
        browser.open("/count")
        browser.open("/count")
        url = base.replace("http://", "ws://") + "/ws"
        with connect(url, additional_headers={"Cookie": f"sid={browser.cookie}"}, open_timeout=10) as ws:
            assert ws.recv(timeout=10) == "2"
        with connect(url, open_timeout=10) as ws:  # no cookie: a new, empty session
            assert ws.recv(timeout=10) == "None"


def test_asgi_lifespan_passes_through_the_middleware(asgi_framework):
    with serve_site(asgi_framework) as base:
        assert Browser(base).open("/lifespan").body == "True"


def test_asgi_non_blocking_store_runs_inline_on_the_event_loop(asgi_framework):
    store = sites.SpyStore(blocking=False)
    with serve_site(asgi_framework, sites.make_manager(store)) as base:
        browser = Browser(base)
        browser.open("/count")
        browser.open("/count")
    assert store.calls == ["set", "get", "update"] and store.threads == {LOOP_THREAD}


def test_asgi_blocking_store_calls_run_in_worker_threads_and_overlap(asgi_framework):
    """10 concurrent requests on a store that takes 0.2 s per call: loads and commits run in worker
    threads, several at once, never on the event loop's thread."""
    store = sites.SpyStore(delay=0.2, blocking=True)
    with serve_site(asgi_framework, sites.make_manager(store)) as base:
        browsers = [Browser(base) for _ in range(10)]

        def all_count() -> List[str]:
            with ThreadPoolExecutor(len(browsers)) as pool:
                return [reply.body for reply in pool.map(lambda b: b.open("/count"), browsers)]

        assert all_count() == ["1"] * 10  # commits (set) only: no cookie yet, nothing to load
        assert all_count() == ["2"] * 10  # loads (get) and commits (update)
    assert store.calls.count("get") == 10 and store.calls.count("set") == store.calls.count("update") == 10
    assert store.max_in_flight > 1
    assert LOOP_THREAD not in store.threads


def test_asgi_https_from_the_scheme_or_a_trusted_forwarded_proto(asgi_framework):
    manager = sites.make_manager(sites.SpyStore(), cookie={"secure": "auto"}, trust_proxy=True)
    with serve_site(asgi_framework, manager) as base:
        (plain,) = Browser(base).open("/count").set_cookies
        (forwarded,) = Browser(base).open("/count", headers={"X-Forwarded-Proto": "https"}).set_cookies
    assert "Secure" not in plain and forwarded.endswith("; Secure; SameSite=Lax")


def test_asgi_forwarded_proto_is_ignored_without_trust_proxy(asgi_framework):
    manager = sites.make_manager(sites.SpyStore(), cookie={"secure": "auto"})
    with serve_site(asgi_framework, manager) as base:
        (cookie,) = Browser(base).open("/count", headers={"X-Forwarded-Proto": "https"}).set_cookies
    assert "Secure" not in cookie



# ASGI at the protocol level: what a server sends and receives, without a framework


def asgi_exchange(app: Any, scope: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Run one ASGI call of ``ASGISessionMiddleware(app)`` and return the messages it sent."""
    sent: List[Dict[str, Any]] = []

    async def receive() -> Dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def http_scope(scheme: str = "http", headers: Tuple[Tuple[bytes, bytes], ...] = ()) -> Dict[str, Any]:
    return {"type": "http", "scheme": scheme, "method": "GET", "path": "/", "raw_path": b"/",
            "root_path": "", "query_string": b"", "headers": list(headers)}


async def counting_app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
    scope["session"]["n"] = scope["session"].get("n", 0) + 1
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_asgi_https_scheme_allows_the_secure_cookie():
    manager = sessions.SessionManager("secret", cookie={"secure": True})
    app = sessions.ASGISessionMiddleware(counting_app, manager)
    start = asgi_exchange(app, http_scope("https"))[0]
    assert [name for name, _ in start["headers"]] == [b"content-type", b"set-cookie", b"cache-control", b"vary"]
    assert start["headers"][1][1].endswith(b"; Secure; SameSite=Lax")
    plain = asgi_exchange(app, http_scope("http"))[0]  # a Secure cookie never goes over plain HTTP
    assert [name for name, _ in plain["headers"]] == [b"content-type", b"vary"]


def test_asgi_lifespan_scope_reaches_the_app_untouched():
    seen: List[Any] = []

    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    scope = {"type": "lifespan"}
    middleware = sessions.ASGISessionMiddleware(app, sessions.SessionManager("secret"))

    async def receive() -> Dict[str, Any]:
        return {}

    async def send(message: Dict[str, Any]) -> None:
        pass

    asyncio.run(middleware(scope, receive, send))
    assert seen == [(scope, receive, send)] and "session" not in scope


def test_asgi_websocket_session_is_committed_at_accept():
    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        scope["session"]["user"] = "alice"
        await send({"type": "websocket.accept"})
        with pytest.raises(sessions.SessionClosedError):
            scope["session"]["late"] = True

    store = sessions.MemoryStore()
    sent = asgi_exchange(sessions.ASGISessionMiddleware(app, sessions.SessionManager("secret", store=store)),
                         dict(http_scope("ws"), type="websocket"))
    (accept,) = sent
    assert [name for name, _ in accept["headers"]] == [b"set-cookie", b"cache-control", b"vary"]
    assert len(store) == 1


def test_asgi_hops_to_a_thread_only_for_store_calls_of_a_blocking_store(monkeypatch):
    used = {"session": False}

    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if used["session"]:
            scope["session"]["views"] = 1
        await send({"type": "http.response.start", "status": 200, "headers": []})

    class BlockingStore(sessions.Store):  # blocking, as a Store is by default
        def __init__(self) -> None:
            self.calls: List[str] = []

        def get(self, sid):
            self.calls.append("get")

        def set(self, sid, record, expires):
            self.calls.append("set")

    store = BlockingStore()
    middleware = sessions.ASGISessionMiddleware(app, sessions.SessionManager("secret", store=store))
    hops: List[Any] = []
    to_thread = asyncio.to_thread

    async def counted(function: Any, *args: Any) -> Any:
        hops.append(function.__name__)
        return await to_thread(function, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    signed = ("sid=" + urllib.parse.quote("s:" + sessions.sign("abc", "secret"), safe="")).encode()
    asgi_exchange(middleware, http_scope(headers=((b"cookie", b"_ga=GA1.2.3; theme=dark"),)))
    asgi_exchange(middleware, http_scope(headers=((b"cookie", b"_ga=GA1.2.3; sid=s:abc.forged"),)))
    assert hops == [] and store.calls == []  # no session cookie that verifies: no store call, no thread
    asgi_exchange(middleware, http_scope(headers=((b"cookie", signed),)))
    assert hops == ["_perform"] and store.calls == ["get"]  # read up front; unused: its commit calls nothing
    used["session"] = True
    asgi_exchange(middleware, http_scope(headers=((b"cookie", signed),)))
    assert hops == ["_perform"] * 3 and store.calls == ["get", "get", "set"]


def test_asgi_app_failing_before_its_response_stores_nothing():
    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        scope["session"]["n"] = 1
        raise RuntimeError("the endpoint failed")

    store = sessions.MemoryStore()
    with pytest.raises(RuntimeError):
        asgi_exchange(sessions.ASGISessionMiddleware(app, sessions.SessionManager("secret", store=store)),
                      http_scope())
    assert len(store) == 0


# Django ###################################################################################################


@pytest.fixture
def django_browser(servers) -> Browser:
    browser = Browser(servers("django"))
    browser.reset()
    return browser


def test_django_set_expiry(django_browser):
    reply = django_browser.open("/expiry?seconds=60")
    expiry = json.loads(reply.body)
    assert 50 <= expiry["age"] <= 60 and expiry["at_browser_close"] is False  # read back in the same view
    (cookie,) = reply.set_cookies
    assert "Max-Age=60;" in cookie
    reply = django_browser.open("/expiry?seconds=0")  # 0: until the browser closes
    # Django's get_expiry_age() for a browser-session cookie: SESSION_COOKIE_AGE, the default 2 weeks
    assert json.loads(reply.body) == {"age": 1209600, "at_browser_close": True}
    (cookie,) = reply.set_cookies
    assert "Max-Age" not in cookie


def test_django_csrf_token_kept_in_the_session(django_browser):
    token = django_browser.open("/form").body
    record = django_browser.stats()["records"][django_browser.sid]
    assert record.get("_csrftoken")  # CSRF_USE_SESSIONS: the secret is a session key, not a cookie
    assert [c.name for c in django_browser.jar] == ["sid"]
    assert django_browser.open("/form", {"csrfmiddlewaretoken": token}).body == "accepted"
    assert django_browser.open("/form", {"csrfmiddlewaretoken": "x" * 64}).status == 403


def test_django_messages_are_stored_in_the_session(django_browser):
    django_browser.open("/flash", follow=False)
    stored = json.loads(django_browser.stats()["records"][django_browser.sid]["_messages"])
    assert [message[3] for message in stored] == ["hello", "again"]  # ["__json_message", 0, level, text, tags]
    assert django_browser.open("/show").body == "hello,again"
    assert "_messages" not in django_browser.stats()["records"][django_browser.sid]  # consumed


def test_django_login_stores_the_user_under_a_new_id(django_browser):
    django_browser.open("/count")
    before = django_browser.sid
    django_browser.open("/login")
    record = django_browser.stats()["records"][django_browser.sid]
    assert django_browser.sid != before
    assert record["_auth_user_id"] and record["_auth_user_hash"] and record["n"] == 1




# Core additions the adapters rely on (CONTRACT decision 3) ################################################


def _pair(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0]


def _loaded_session(manager: sessions.SessionManager, **data: Any) -> Tuple[sessions.Session, str]:
    """A stored session with ``data``, reopened from its cookie: (session, cookie pair)."""
    session = manager.open(None)
    session.update(data)
    cookie = _pair(manager.commit(session)[0])
    return manager.open(cookie), cookie


class _CountingStore(sessions.MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        self.writes += 1
        super().set(sid, record, expires)

    def update(self, sid: str, change: Any, expires: Optional[float]) -> bool:
        self.writes += 1
        return super().update(sid, change, expires)


def test_setting_modified_forces_a_save_of_unchanged_data():
    store = _CountingStore()
    manager = sessions.SessionManager("secret", store=store)
    session, cookie = _loaded_session(manager, n=1)
    manager.commit(session)
    assert store.writes == 1  # unchanged: touched, not written
    again = manager.open(cookie)
    again.modified = True
    assert again.modified
    manager.commit(again)
    assert store.writes == 2


def test_clearing_modified_does_not_hide_a_data_change():
    store = sessions.MemoryStore()
    manager = sessions.SessionManager("secret", store=store)
    session, cookie = _loaded_session(manager, n=1)
    session["n"] = 2
    session.modified = False
    assert session.modified
    manager.commit(session)
    assert manager.open(cookie)["n"] == 2


def test_flush_deletes_the_record_now_and_expires_the_cookie_when_nothing_follows():
    store = sessions.MemoryStore()
    manager = sessions.SessionManager("secret", store=store)
    session, cookie = _loaded_session(manager, user="alice")
    old_id = session.id
    session.flush()
    assert store.get(old_id) is None  # now, not at commit
    assert session.is_new and session.id != old_id and dict(session) == {}
    (clearing,) = manager.commit(session)
    assert "Max-Age=0" in clearing
    assert len(store) == 0


def test_flush_then_write_stores_a_new_session_under_a_new_id():
    store = sessions.MemoryStore()
    manager = sessions.SessionManager("secret", store=store)
    session, cookie = _loaded_session(manager, user="alice")
    old_id = session.id
    session.flush()
    session["flash"] = "bye"
    (set_cookie,) = manager.commit(session)
    assert "Max-Age=0" not in set_cookie
    reopened = manager.open(_pair(set_cookie))
    assert dict(reopened) == {"flash": "bye"} and reopened.id != old_id
    assert store.ids() == [reopened.id]
    assert manager.open(cookie).is_new  # the old id never comes back
