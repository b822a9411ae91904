"""Live interop with the real Node stack: express 4 + express-session 1.19 + connect-redis 9 + redis 5, or
connect-pg-simple 10 + pg 8 (fixtures/express/app.js), and a sessions.py app (``RedisStore``, or
``PostgresStore``) share one real redis-server, or one real PostgreSQL table, and one cookie jar, like one
browser visiting two services of one site. Every scenario runs on both backends.

Both apps listen on 127.0.0.1, on different ports. Cookies are scoped by host, not by port (RFC 6265
section 8.5), and ``http.cookiejar`` does the same: a cookie set by one port is sent to the other (the
first test checks it), so one ``CookieJar`` drives both apps.

Both apps expose the same JSON routes: GET /get and GET /touch (read only), POST /set (merge the body's
top-level keys), POST /regenerate (new id, empty data, then merge the body), POST /destroy. /get answers
``{"id": <16 hex of sha256(session id)>, "data": {...}}``, so the tests compare ids without the apps
echoing them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from http.cookiejar import Cookie, CookieJar
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import sessions
from conftest import free_port, missing, require_binary, stop_process

try:
    import redis
except ImportError:  # CONTRACT decision 4 (see missing()): a failure under CI, a skip elsewhere
    redis = None
try:
    import psycopg
except ImportError:  # the same
    psycopg = None

NODE_APP = Path(__file__).resolve().parent / "fixtures" / "express"
SECRET = "interop sécret ✓"  # not ASCII: both sides must sign with its UTF-8 bytes
NAME = "sid"
PREFIX = "sess:"
LONG_MS = 60_000  # functional tests: nothing expires while they run
SHORT_MS = 3_000  # expiry tests: short enough to wait out, long enough for a few requests
STARTUP_SECONDS = 15.0
ISO_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"

# Unicode, nesting, escapes and the JSON corner cases both encoders must write alike (no integer-like
# keys: JavaScript objects put those first, so their order cannot survive a trip through Node).
UNICODE_DATA: Dict[str, Any] = {
    "name": "Zoë Ødegård — 日本語 😀",
    "nested": {
        "list": [1, 2.5, -3, 0.1, True, False, None, {"deep": ["é", "tab\tnl\n", "q\"b\\", "</script>"]}],
        "empty": {},
        "none": [],
    },
    "controls": "\x00\x1f\x7f\u2028\u2029",
    "ключ": {"β": "γ"},
}


def id_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()[:16]


def wait_for_port(port: int, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the Node app did not listen on port {port}:\n{log_path.read_text(errors='replace')[-2000:]}")


class NodeApp:
    """fixtures/express/app.js in a subprocess, stopped by its PID."""

    def __init__(self, node: str, store_env: Dict[str, str], max_age_ms: int, rolling: bool, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PORT=str(self.port), SECRET=SECRET, COOKIE_NAME=NAME,
                   MAX_AGE_MS=str(max_age_ms), ROLLING="1" if rolling else "0", **store_env)
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([node, "app.js"], cwd=NODE_APP, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, self.process, log_path)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.process, timeout=5)


def python_app(store: sessions.Store, max_age_ms: int, rolling: bool) -> Tuple[ThreadingHTTPServer, threading.Thread]:
    """The same routes on sessions.py's http.server adapter, served from a thread."""
    manager = sessions.SessionManager(
        SECRET, store=store, name=NAME,
        cookie={"max_age": max_age_ms / 1000}, rolling=rolling,
    )

    class Handler(sessions.SessionHandlerMixin, BaseHTTPRequestHandler):
        session_manager = manager

        def do_GET(self) -> None:
            if self.path in ("/get", "/touch"):
                self.reply(self.view())
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/destroy":
                self.session.destroy()
                self.reply({"destroyed": True})
                return
            if self.path == "/regenerate":
                self.session.regenerate()
            elif self.path != "/set":
                self.send_error(404)
                return
            self.session.update(body)
            self.reply(self.view())

        def view(self) -> Dict[str, Any]:
            return {"id": id_hash(self.session.id), "data": dict(self.session)}

        def reply(self, value: Any) -> None:
            payload = json.dumps(value, ensure_ascii=False).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


class RedisBackend:
    """The shared redis-server: what each app's store is given, and the stored records as they are."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.client = redis.Redis.from_url(server.url, decode_responses=True)
        self.node_env = {"REDIS_URL": server.url}

    def python_store(self) -> sessions.Store:
        client = redis.Redis.from_url(self.server.url, socket_timeout=5, socket_connect_timeout=5)
        return sessions.RedisStore(client, prefix=PREFIX)

    def record(self, sid: str) -> Optional[str]:
        return self.client.get(PREFIX + sid)

    def ids(self) -> List[str]:
        return [key[len(PREFIX):] for key in self.client.keys(PREFIX + "*")]

    def ttl(self, sid: str) -> int:
        return self.client.ttl(PREFIX + sid)

    def clear(self) -> None:
        self.server.flushall()

    def close(self) -> None:
        self.client.close()


class PostgresBackend:
    """The shared PostgreSQL table (connect-pg-simple's "session", made by its own table.sql through
    PostgresStore's create_table): the live rows, by the real clock, as connect-pg-simple's get sees them."""

    LIVE = "expire > to_timestamp(%s)"

    def __init__(self, server: Any) -> None:
        self.dsn = server.dsn
        self.node_env = {"DATABASE_URL": server.url}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute('DROP TABLE IF EXISTS "session"')
        len(self.python_store(create_table=True))  # creates the table

    def python_store(self, create_table: bool = False) -> sessions.Store:
        return sessions.PostgresStore(lambda: psycopg.connect(self.dsn), create_table=create_table)

    def _rows(self, sql: str, *params: Any) -> List[Tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def record(self, sid: str) -> Optional[str]:
        rows = self._rows(f"SELECT sess::text FROM session WHERE sid = %s AND {self.LIVE}", sid, time.time())
        return rows[0][0] if rows else None

    def ids(self) -> List[str]:
        return [row[0] for row in self._rows(f"SELECT sid FROM session WHERE {self.LIVE}", time.time())]

    def ttl(self, sid: str) -> int:
        """Whole seconds until the row's expire (Redis's TTL rounds down too)."""
        (expire,) = self._rows("SELECT extract(epoch FROM expire::timestamptz)::float8 FROM session"
                               f" WHERE sid = %s AND {self.LIVE}", sid, time.time())[0]
        return int(expire - time.time())

    def clear(self) -> None:
        self._rows("DELETE FROM session")

    def close(self) -> None:
        pass


class Stack:
    """One Node app and one Python app (same secret, cookie name, max age and rolling) on one store's
    backend; ``record``, ``ids``, ``ttl`` read the backend directly."""

    def __init__(self, node_url: str, python_url: str, backend: Any, max_age_ms: int) -> None:
        self.node = node_url
        self.python = python_url
        self.backend = backend
        self.max_age_ms = max_age_ms

    def record(self, sid: str) -> Optional[str]:
        return self.backend.record(sid)

    def ids(self) -> List[str]:
        return self.backend.ids()

    def ttl(self, sid: str) -> int:
        return self.backend.ttl(sid)


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with fixtures/express's node_modules installed (``npm ci`` there)."""
    if redis is None:
        missing("the redis Python package is not installed")
    binary = require_binary("node")
    if not (NODE_APP / "node_modules" / "express-session").is_dir():
        missing("fixtures/express/node_modules is missing: run `npm ci --prefix fixtures/express`")
    return binary


def backend_for(request: pytest.FixtureRequest) -> Any:
    """The backend a stack fixture's parameter names, its server started (once per test session)."""
    if request.param == "postgres":
        if psycopg is None:
            missing("the psycopg Python package is not installed")
        if not (NODE_APP / "node_modules" / "connect-pg-simple").is_dir():
            missing("fixtures/express/node_modules lacks connect-pg-simple: run `npm ci --prefix fixtures/express`")
        return PostgresBackend(request.getfixturevalue("postgres_server"))
    return RedisBackend(request.getfixturevalue("redis_server"))


def make_stack(node: str, backend: Any, tmp_path_factory: pytest.TempPathFactory, max_age_ms: int,
               rolling: bool) -> Iterator[Stack]:
    log = tmp_path_factory.mktemp("node") / "app.log"
    node_app = NodeApp(node, backend.node_env, max_age_ms, rolling, log)
    try:
        server, thread = python_app(backend.python_store(), max_age_ms, rolling)
        try:
            yield Stack(node_app.url, f"http://127.0.0.1:{server.server_address[1]}", backend, max_age_ms)
            backend.close()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
    finally:
        node_app.stop()


BACKENDS = ["redis", "postgres"]


@pytest.fixture(scope="module", params=BACKENDS)
def long_lived_stack(node: str, request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from make_stack(node, backend_for(request), tmp_path_factory, LONG_MS, rolling=False)


@pytest.fixture
def stack(long_lived_stack: Stack) -> Stack:
    """Long-lived sessions, rolling off (both apps' defaults), on each backend; the store starts empty."""
    long_lived_stack.backend.clear()
    return long_lived_stack


@pytest.fixture(scope="module", params=BACKENDS)
def short_lived_stack(node: str, request: pytest.FixtureRequest,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from make_stack(node, backend_for(request), tmp_path_factory, SHORT_MS, rolling=True)


@pytest.fixture
def short_stack(short_lived_stack: Stack) -> Stack:
    """Sessions of SHORT_MS idle lifetime, rolling on both sides, on each backend; the store starts empty."""
    short_lived_stack.backend.clear()
    return short_lived_stack


class Response:
    """An app's JSON answer and the Set-Cookie values that came with it."""

    def __init__(self, body: Any, set_cookies: List[str]) -> None:
        self.body = body
        self.set_cookies = set_cookies

    @classmethod
    def fetch(cls, opener: Any, request: urllib.request.Request) -> "Response":
        with opener.open(request, timeout=10) as response:
            return cls(json.loads(response.read().decode("utf-8")), response.headers.get_all("Set-Cookie") or [])

    @property
    def id(self) -> str:
        return self.body["id"]

    @property
    def data(self) -> Dict[str, Any]:
        return self.body["data"]

    def cookie_value(self) -> str:
        """The value of the one session cookie this response set."""
        values = [c.split(";", 1)[0][len(NAME) + 1:] for c in self.set_cookies if c.startswith(NAME + "=")]
        assert len(values) == 1, self.set_cookies
        return values[0]


class Browser:
    """One cookie jar for both apps, like a browser visiting two services of one host."""

    def __init__(self) -> None:
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def call(self, base: str, method: str, path: str, body: Any = None) -> Response:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        return Response.fetch(self.opener, request)

    def get(self, base: str, path: str = "/get") -> Response:
        return self.call(base, "GET", path)

    def post(self, base: str, path: str, body: Any = None) -> Response:
        return self.call(base, "POST", path, {} if body is None else body)

    def session_cookie(self) -> Optional[Cookie]:
        cookies = [c for c in self.jar if c.name == NAME]
        assert len(cookies) <= 1, cookies
        return cookies[0] if cookies else None

    def sid(self) -> str:
        """The session id in the jar's cookie (``s%3A<sid>.<mac>``)."""
        cookie = self.session_cookie()
        assert cookie is not None, "no session cookie in the jar"
        signed = urllib.parse.unquote(cookie.value)
        assert signed.startswith("s:"), signed
        return signed[2:].rsplit(".", 1)[0]

    def ignore_expiry(self) -> None:
        """Keep sending the session cookie after its Expires/Max-Age, as a client with a slow clock (or a
        hostile one) would; the servers must then refuse the session on their own."""
        cookie = self.session_cookie()
        assert cookie is not None
        cookie.expires = None
        cookie.discard = True


def replay(base: str, cookie_value: str) -> Response:
    """A request outside the jar carrying an old session cookie (a copy kept by someone else)."""
    request = urllib.request.Request(base + "/get", headers={"Cookie": f"{NAME}={cookie_value}"})
    return Response.fetch(urllib.request.build_opener(), request)


def record_expires_ms(record: str) -> int:
    match = re.search(r'"expires":"(' + ISO_MS + ')"', record)
    assert match, record
    parsed = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return round(parsed.timestamp() * 1000)


def without_expires(record: str) -> str:
    return re.sub(r'"expires":"' + ISO_MS + '"', '"expires":"<expires>"', record)


def expected_record(max_age_ms: int, data: Dict[str, Any]) -> str:
    """express-session's record for ``data`` with the apps' cookie options, ``expires`` left out."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return ('{"cookie":{"originalMaxAge":%d,"expires":"<expires>","httpOnly":true,"path":"/","sameSite":"lax"}'
            % max_age_ms) + ("}" if body == "{}" else "," + body[1:])


def is_express_record(record: Optional[str], max_age_ms: int, data: Dict[str, Any]) -> bool:
    """``record`` is express-session's record for ``data`` (``expires`` aside), as Node writes it: its
    ``originalMaxAge`` may be one millisecond short, because express-session's Cookie sets ``expires =
    Date.now() + maxAge`` and then ``originalMaxAge = expires - Date.now()``, and the clock can tick between
    the two calls (seen once in ten full runs). sessions.py writes ``expected_record`` exactly."""
    return record is not None and without_expires(record) in (
        expected_record(max_age_ms, data), expected_record(max_age_ms - 1, data)
    )


def attribute_names(set_cookie: str) -> List[str]:
    """The attributes of a Set-Cookie value, in order, with their values left out (SameSite's kept)."""
    names = []
    for attribute in set_cookie.split(";")[1:]:
        name, _, value = attribute.strip().partition("=")
        names.append(f"{name}={value}" if name == "SameSite" else name)
    return names

# The Node app alone: its sessions through the jar, and the records connect-redis writes ####################


def test_node_app_keeps_a_session_through_the_jar_and_writes_connect_redis_records(stack: Stack) -> None:
    browser = Browser()
    created = browser.post(stack.node, "/set", {"user": "ada", "n": 1})
    assert created.data == {"user": "ada", "n": 1}
    sid = browser.sid()
    assert created.id == id_hash(sid)
    record = stack.record(sid)
    assert is_express_record(record, LONG_MS, {"user": "ada", "n": 1}), record
    assert 0 < stack.ttl(sid) <= LONG_MS // 1000
    again = browser.get(stack.node)
    assert (again.id, again.data, again.set_cookies) == (created.id, created.data, [])


# Node and Python together ##################################################################################


def test_one_cookie_jar_serves_both_ports(stack: Stack) -> None:
    browser = Browser()
    browser.post(stack.node, "/set", {"x": 1})
    for base in (stack.node, stack.python):
        request = urllib.request.Request(base + "/get")
        browser.jar.add_cookie_header(request)
        assert request.get_header("Cookie") == f"{NAME}={browser.session_cookie().value}"


def test_created_on_node_continued_on_python_and_back(stack: Stack) -> None:
    browser = Browser()
    created = browser.post(stack.node, "/set", {"user": "ada", "visits": 1})
    sid = browser.sid()
    on_python = browser.get(stack.python)
    assert (on_python.id, on_python.data) == (created.id, {"user": "ada", "visits": 1})
    browser.post(stack.python, "/set", {"visits": 2, "from": "python"})
    assert browser.sid() == sid
    back = browser.get(stack.node)
    assert (back.id, back.data) == (created.id, {"user": "ada", "visits": 2, "from": "python"})
    browser.post(stack.node, "/set", {"visits": 3})
    again = browser.get(stack.python)
    assert (again.id, again.data) == (created.id, {"user": "ada", "visits": 3, "from": "python"})
    assert stack.ids() == [sid]


def test_created_on_python_continued_on_node_and_back(stack: Stack) -> None:
    browser = Browser()
    created = browser.post(stack.python, "/set", {"cart": ["apple"]})
    on_node = browser.get(stack.node)
    assert (on_node.id, on_node.data) == (created.id, {"cart": ["apple"]})
    browser.post(stack.node, "/set", {"cart": ["apple", "pear"]})
    back = browser.get(stack.python)
    assert (back.id, back.data) == (created.id, {"cart": ["apple", "pear"]})


@pytest.mark.parametrize("writer, reader", [("node", "python"), ("python", "node")])
def test_unicode_and_nested_data_cross_over(stack: Stack, writer: str, reader: str) -> None:
    browser = Browser()
    written = browser.post(getattr(stack, writer), "/set", UNICODE_DATA)
    assert written.data == UNICODE_DATA
    read = browser.get(getattr(stack, reader))
    assert (read.id, read.data) == (written.id, UNICODE_DATA)
    assert list(read.data) == list(UNICODE_DATA)  # key order survives too (it counts for "modified")
    record = stack.record(browser.sid())
    if writer == "python":  # sessions.py writes originalMaxAge exactly
        assert without_expires(record) == expected_record(LONG_MS, UNICODE_DATA)
    assert is_express_record(record, LONG_MS, UNICODE_DATA), record


def test_records_python_writes_are_byte_identical_to_nodes_and_read_by_node(stack: Stack) -> None:
    browser = Browser()
    browser.post(stack.node, "/set", UNICODE_DATA)
    node_record = stack.record(browser.sid())
    regenerated = browser.post(stack.python, "/regenerate", UNICODE_DATA)  # the same data, written by Python
    python_record = stack.record(browser.sid())
    assert is_express_record(node_record, LONG_MS, UNICODE_DATA), node_record
    assert without_expires(python_record) == expected_record(LONG_MS, UNICODE_DATA)  # as Node writes it, exactly
    assert 0 < stack.ttl(browser.sid()) <= LONG_MS // 1000
    on_node = browser.get(stack.node)
    assert (on_node.id, on_node.data) == (regenerated.id, UNICODE_DATA)


@pytest.mark.parametrize("long_lived_stack", ["postgres"], indirect=True)
def test_postgres_rows_both_sides_write_have_connect_pg_simple_s_expire(stack: Stack) -> None:
    """``expire`` is the record's cookie.expires rounded up to a whole second, whichever side wrote it, and
    a touch from either side moves it alone (the record keeps its first cookie.expires)."""
    dsn = stack.backend.dsn
    browser = Browser()

    def row() -> Tuple[str, float]:
        with psycopg.connect(dsn) as conn:
            return conn.execute("SELECT sess::text, extract(epoch FROM expire::timestamptz)::float8 FROM session"
                                " WHERE sid = %s", (browser.sid(),)).fetchone()

    for writer, toucher in ((stack.node, stack.python), (stack.python, stack.node)):
        browser.post(writer, "/regenerate", {"by": writer})
        record, expire = row()
        assert expire == -(-record_expires_ms(record) // 1000)
        time.sleep(1.1)  # the next whole second, so that the touch visibly moves expire
        browser.get(toucher, "/touch")
        touched, later = row()
        assert touched == record and later > expire


def test_identical_cookie_values(stack: Stack) -> None:
    browser = Browser()
    node_cookie = browser.post(stack.node, "/set", {"a": 1}).cookie_value()
    # A changed session with an expiry: both send the cookie again, the same value byte for byte.
    python_cookie = browser.post(stack.python, "/set", {"a": 2}).cookie_value()
    assert python_cookie == node_cookie
    assert node_cookie == urllib.parse.quote("s:" + sessions.sign(browser.sid(), SECRET), safe="-_.!~*'()")
    python_new = browser.post(stack.python, "/regenerate", {"b": 1})
    node_again = browser.post(stack.node, "/set", {"b": 2})
    assert node_again.cookie_value() == python_new.cookie_value()
    # The attributes agree too, except that sessions.py adds Max-Age next to Expires (SPEC section 9.6).
    node_attributes = attribute_names(node_again.set_cookies[0])
    assert node_attributes == ["Path", "Expires", "HttpOnly", "SameSite=Lax"]
    assert attribute_names(python_new.set_cookies[0]) == ["Max-Age"] + node_attributes



def test_regenerate_both_ways(stack: Stack) -> None:
    browser = Browser()
    browser.post(stack.node, "/set", {"role": "guest"})
    first_sid, first_cookie = browser.sid(), browser.session_cookie().value

    on_python = browser.post(stack.python, "/regenerate", {"role": "admin"})
    second_sid = browser.sid()
    assert second_sid != first_sid and on_python.id == id_hash(second_sid)
    assert stack.record(first_sid) is None and stack.record(second_sid) is not None
    on_node = browser.get(stack.node)
    assert (on_node.id, on_node.data) == (on_python.id, {"role": "admin"})  # regenerate starts empty
    old = replay(stack.node, first_cookie)  # the old id is dead for Node too
    assert old.id != id_hash(first_sid) and old.data == {}

    second_cookie = browser.session_cookie().value
    regenerated = browser.post(stack.node, "/regenerate", {"role": "root"})
    third_sid = browser.sid()
    assert third_sid not in (first_sid, second_sid) and regenerated.id == id_hash(third_sid)
    assert stack.record(second_sid) is None and stack.record(third_sid) is not None
    on_python = browser.get(stack.python)
    assert (on_python.id, on_python.data) == (regenerated.id, {"role": "root"})
    old = replay(stack.python, second_cookie)
    assert old.id != id_hash(second_sid) and old.data == {}
    assert stack.ids() == [third_sid]


def test_destroy_both_ways(stack: Stack) -> None:
    browser = Browser()
    browser.post(stack.node, "/set", {"user": "ada"})
    node_sid = browser.sid()
    assert browser.post(stack.node, "/destroy").body == {"destroyed": True}
    assert stack.record(node_sid) is None
    assert browser.sid() == node_sid  # express-session 1.x leaves the browser's cookie in place
    on_python = browser.get(stack.python)  # ... which Python then finds dead
    assert on_python.id != id_hash(node_sid) and on_python.data == {}
    assert stack.ids() == []

    browser.post(stack.python, "/set", {"user": "bob"})
    python_sid = browser.sid()
    python_cookie = browser.session_cookie().value
    assert browser.post(stack.python, "/destroy").body == {"destroyed": True}
    assert stack.record(python_sid) is None
    assert browser.session_cookie() is None  # sessions.py expires the cookie on destroy
    on_node = browser.get(stack.node)
    assert on_node.data == {} and on_node.set_cookies == []
    old = replay(stack.node, python_cookie)  # a copy of the old cookie is dead for Node too
    assert old.id != id_hash(python_sid) and old.data == {}
    assert stack.ids() == []


# Expiry: SHORT_MS lifetimes, real waiting (bounded) ########################################################

STEP_SECONDS = 0.5


def touch_until(browser: Browser, bases: List[str], until: float, expect: Response) -> int:
    """Read-only requests, cycling through ``bases``, every STEP_SECONDS until time.time() > ``until``;
    each must see the session ``expect`` showed. Returns how many were made (bounded)."""
    count = 0
    limit = int((until - time.time()) / STEP_SECONDS) + 4
    while time.time() <= until:
        assert count < limit, "touch loop overran"
        touched = browser.get(bases[count % len(bases)], "/touch")
        assert (touched.id, touched.data) == (expect.id, expect.data)
        assert touched.set_cookies, "rolling: every response re-sends the cookie"
        count += 1
        time.sleep(STEP_SECONDS)
    return count


def wait_until_gone(stack: Stack, sid: str) -> None:
    """Poll (bounded) until redis-server itself dropped the record (its TTL is whole seconds, rounded up)."""
    deadline = time.monotonic() + stack.max_age_ms / 1000 + 3
    while stack.record(sid) is not None:
        assert time.monotonic() < deadline, "the record outlived its TTL"
        time.sleep(0.1)


def test_touches_on_both_sides_keep_a_session_alive_past_its_original_expiry(short_stack: Stack) -> None:
    browser = Browser()
    created = browser.post(short_stack.node, "/set", {"alive": "yes"})
    sid = browser.sid()
    original_expires = record_expires_ms(short_stack.record(sid)) / 1000
    # Touches only (no data change), alternating Node and Python, well past the original expiry and past
    # the TTL's rounding: connect-redis touches with EXPIRE alone, so the TTL is what keeps it alive.
    touches = touch_until(browser, [short_stack.node, short_stack.python], original_expires + 1.5, created)
    assert touches >= 2
    record = short_stack.record(sid)
    assert is_express_record(record, SHORT_MS, {"alive": "yes"}), record
    # Nobody rewrote the record, whose own cookie.expires is long past: only the TTL kept it.
    assert record_expires_ms(record) / 1000 == original_expires < time.time()
    assert browser.session_cookie().expires > original_expires  # rolling slid the browser's cookie too
    for base in (short_stack.node, short_stack.python):
        alive = browser.get(base)
        assert (alive.id, alive.data) == (created.id, {"alive": "yes"})


@pytest.mark.parametrize("creator, other", [("node", "python"), ("python", "node")])
def test_idle_expiry_on_both_sides(short_stack: Stack, creator: str, other: str) -> None:
    browser = Browser()
    created = browser.post(getattr(short_stack, creator), "/set", {"idle": creator})
    continued = browser.get(getattr(short_stack, other), "/touch")
    assert (continued.id, continued.data) == (created.id, {"idle": creator})
    sid = browser.sid()
    assert 0 < short_stack.ttl(sid) <= SHORT_MS // 1000
    browser.ignore_expiry()  # keep sending the dead cookie: the servers must refuse it themselves
    wait_until_gone(short_stack, sid)
    for base in (short_stack.node, short_stack.python):
        fresh = browser.get(base)
        assert fresh.id != created.id and fresh.data == {}
        assert browser.sid() == sid  # a read-only visit of a new session sets no cookie
    assert short_stack.ids() == []


# Numbers JSON.stringify writes differently from Python's float repr: integral floats (a JSON body's 1.0),
# big and small exponents, negative zero. Both sides read each other's numbers as equal values.
NUMBERS = {"floats": [1.0, 1e16, 1e21, 5e-7, -0.0, 123456789.125]}


def test_numbers_python_writes_are_read_by_node(stack: Stack) -> None:
    browser = Browser()
    written = browser.post(stack.python, "/set", NUMBERS)
    assert browser.get(stack.node).data == written.data == NUMBERS


def test_numbers_in_records_are_byte_identical(stack: Stack) -> None:
    browser = Browser()
    browser.post(stack.node, "/set", NUMBERS)
    node_record = stack.record(browser.sid())
    browser.post(stack.python, "/regenerate", NUMBERS)
    assert without_expires(stack.record(browser.sid())) == without_expires(node_record)
