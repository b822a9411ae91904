"""In-process cost of one request's session work, next to a floor, Flask, and untouched requests.

Every variant handles the same realistic request: a Cookie header with the session cookie between three
neighbour cookies, a session holding a user id, a name, roles, a CSRF token and a view counter.

- ``sessions: loaded, modified``: ``manager.open(header)`` + ``session["views"] += 1`` + ``manager.commit``
  (MemoryStore get, record parse, store update, a Set-Cookie because the cookie has a max_age).
- ``sessions: loaded, unmodified``: open + read one key + commit (the touch path: store touch, no Set-Cookie).
- ``sessions: new``: open without a cookie + one write + commit (store set, Set-Cookie).
- ``floor``: the least work the design needs, written plainly: split the Cookie header, one HMAC verify,
  one JSON load, one dict write (the counter), one JSON dump, one store write (a dict), one HMAC sign.
- ``flask``: Flask's default cookie session, ``SecureCookieSessionInterface.open_session`` + the same
  modification + ``save_session`` (request and response objects are built outside the timed region).
- untouched: the http.server mixin and the WSGI middleware on a request that never reads its session,
  minus the same handler / app without them.
"""

from __future__ import annotations

import base64
import email.message
import hashlib
import hmac
import json
import time
from typing import Any, Dict, List, Optional, Tuple

import sessions

from . import record_text, timing

SECRET = "bench secret: 32 random bytes would go here, e.g. secrets.token_hex(32)"
MAX_AGE = 3600
DATA = {
    "user_id": 4217,
    "name": "alice",
    "roles": ["user", "editor"],
    "csrf": "Xo1pY4n0eS2bq3dZ8QmL5vK7wR9tU6aC",
    "views": 0,
}
NEIGHBOURS = ("theme=dark", "lang=en-GB", "_ga=GA1.2.1234567890.1700000000")


def cookie_header(name: str, value: str) -> str:
    """The session cookie in the middle of realistic neighbours."""
    return "; ".join((NEIGHBOURS[0], NEIGHBOURS[1], f"{name}={value}", NEIGHBOURS[2]))


def set_cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


class CountingStore(sessions.MemoryStore):
    """A MemoryStore that counts the manager's calls (not its own inner ones, e.g. touch calling set):
    used only for the untimed checks that each path does what it says."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = {"get": 0, "set": 0, "update": 0, "touch": 0, "destroy": 0}
        self._depth = 0

    def _count(self, method: str, *args: Any) -> Any:
        if self._depth == 0:
            self.calls[method] += 1
        self._depth += 1
        try:
            return getattr(super(), method)(*args)
        finally:
            self._depth -= 1

    def get(self, sid):  # type: ignore[override]
        return self._count("get", sid)

    def set(self, sid, record, expires):  # type: ignore[override]
        return self._count("set", sid, record, expires)

    def update(self, sid, change, expires):  # type: ignore[override]
        return self._count("update", sid, change, expires)

    def touch(self, sid, record, expires):  # type: ignore[override]
        return self._count("touch", sid, record, expires)

    def destroy(self, sid):  # type: ignore[override]
        return self._count("destroy", sid)


def new_manager(store: Optional[sessions.Store] = None) -> sessions.SessionManager:
    return sessions.SessionManager(SECRET, store=sessions.MemoryStore() if store is None else store, cookie={"max_age": MAX_AGE})


def seed(manager: sessions.SessionManager) -> Tuple[str, str]:
    """Create the benchmark's session; returns (sid, Cookie header carrying it)."""
    session = manager.open(None)
    session.update(DATA)
    value = set_cookie_value(manager.commit(session)[0])
    return session.id, cookie_header(manager.name, value)


# The floor ##################################################################################################

_FLOOR_KEY = SECRET.encode()
_floor_dump = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _floor_mac(sid: str) -> str:
    digest = hmac.new(_FLOOR_KEY, sid.encode(), hashlib.sha256).digest()
    # base64 without padding, percent-encoded as in the cookie (only '+' and '/' can occur)
    return base64.b64encode(digest).decode().rstrip("=").replace("+", "%2B").replace("/", "%2F")


def floor_cycle(header: str, store: Dict[str, str]) -> Optional[str]:
    """The least work the design needs, written plainly."""
    value = None
    for part in header.split(";"):  # split the Cookie header
        name, _, raw = part.strip().partition("=")
        if name == "sid":
            value = raw
            break
    if value is None or not value.startswith("s%3A"):
        return None
    sid, _, mac = value[4:].rpartition(".")
    if not hmac.compare_digest(mac, _floor_mac(sid)):  # one HMAC verify
        return None
    record = json.loads(store[sid])  # one JSON load
    record["views"] += 1  # the request's change
    store[sid] = _floor_dump(record)  # one JSON dump, one dict write
    return "sid=s%3A" + sid + "." + _floor_mac(sid) + "; Path=/; HttpOnly; SameSite=Lax"  # one HMAC sign


# Untouched requests ###########################################################################################


class FakeHTTPBase:
    """The hooks of ``BaseHTTPRequestHandler`` one request goes through, each doing nothing, so that a
    handler with ``SessionHandlerMixin`` minus the same handler without it is the mixin's own cost."""

    protocol_version = "HTTP/1.1"

    def __init__(self, header: str) -> None:
        self.headers = email.message.Message()
        self.headers["Cookie"] = header
        self.path = "/"
        self.command = "GET"
        self.request_version = "HTTP/1.1"
        self.connection = object()
        self.close_connection = False
        self._headers_buffer: List[bytes] = []
        self.set_cookies = 0
        self.responses = 0

    def handle_one_request(self) -> None:
        if self.parse_request():
            self.do_GET()

    def parse_request(self) -> bool:
        return True

    def send_response(self, code: int, message: Optional[str] = None) -> None:
        self.send_response_only(code, message)

    def send_response_only(self, code: int, message: Optional[str] = None) -> None:
        pass

    def send_header(self, keyword: str, value: str) -> None:
        if keyword == "Set-Cookie":
            self.set_cookies += 1

    def end_headers(self) -> None:
        self.responses += 1

    def do_GET(self) -> None:  # never touches self.session
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()


def handler_classes(manager: sessions.SessionManager) -> Tuple[type, type]:
    plain = type("PlainHandler", (FakeHTTPBase,), {})
    with_sessions = type("SessionHandler", (sessions.SessionHandlerMixin, FakeHTTPBase), {"session_manager": manager})
    return plain, with_sessions


def wsgi_app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:  # never touches its session
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


class StartResponse:
    def __init__(self) -> None:
        self.calls = 0
        self.set_cookies = 0

    def __call__(self, status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> None:
        self.calls += 1
        for name, _ in headers:
            if name == "Set-Cookie":
                self.set_cookies += 1


def wsgi_environ(header: str) -> Dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000", "HTTP_COOKIE": header, "wsgi.url_scheme": "http",
    }


# Flask ########################################################################################################


class FlaskCase:
    """Flask's default cookie session with the same data, permanent with the same lifetime."""

    def __init__(self) -> None:
        import flask
        from werkzeug.test import EnvironBuilder

        self.app = flask.Flask("bench")
        self.app.secret_key = SECRET
        self.app.config["PERMANENT_SESSION_LIFETIME"] = MAX_AGE
        self.interface = self.app.session_interface
        if not isinstance(self.interface, flask.sessions.SecureCookieSessionInterface):
            raise RuntimeError("Flask's default session interface is not SecureCookieSessionInterface")
        request = self.app.request_class(EnvironBuilder(path="/").get_environ())
        session = self.interface.open_session(self.app, request)
        session.update(DATA)
        session.permanent = True
        response = self.app.response_class()
        self.interface.save_session(self.app, session, response)
        name = self.app.config["SESSION_COOKIE_NAME"]
        value = set_cookie_value(response.headers.getlist("Set-Cookie")[0])
        self.cookie_name = name
        self.environ = EnvironBuilder(path="/", headers={"Cookie": cookie_header(name, value)}).get_environ()
        self.last_response: Any = None
        self.responses = 0

    def loop(self, n: int) -> float:
        app, interface = self.app, self.interface
        pairs = [(app.request_class(dict(self.environ)), app.response_class()) for _ in range(n)]
        start = time.perf_counter()
        for request, response in pairs:
            session = interface.open_session(app, request)
            session["views"] = session["views"] + 1
            interface.save_session(app, session, response)
        elapsed = time.perf_counter() - start
        self.last_response = pairs[-1][1]
        self.responses += n
        return elapsed

    def saved_views(self) -> Optional[int]:
        """The view counter in the last response's session cookie (None if Flask sent no cookie)."""
        if self.last_response is None:
            return None
        for set_cookie in self.last_response.headers.getlist("Set-Cookie"):
            if set_cookie.startswith(self.cookie_name + "="):
                data = self.interface.get_signing_serializer(self.app).loads(set_cookie_value(set_cookie))
                return data.get("views")
        return None


# The run ########################################################################################################


def run(reps: int, target_seconds: float) -> Dict[str, Any]:
    """Measure every variant, interleaved; returns per-op medians (µs), ratios and the checks."""
    manager = new_manager()
    sid, header = seed(manager)
    counters = {"modified": 0, "new": 0}
    last: Dict[str, Any] = {}

    def loaded_modified(n: int) -> None:
        open_, commit = manager.open, manager.commit
        for _ in range(n):
            session = open_(header)
            session["views"] = session["views"] + 1
            cookies = commit(session)
        counters["modified"] += n
        last["modified"] = cookies

    def loaded_unmodified(n: int) -> None:
        open_, commit = manager.open, manager.commit
        for _ in range(n):
            session = open_(header)
            session["views"]
            cookies = commit(session)
        last["unmodified"] = cookies

    new_manager_ = new_manager()

    def new_session(n: int) -> float:
        new_manager_.store.clear()  # keep the store small and equal across repetitions (untimed)
        open_, commit = new_manager_.open, new_manager_.commit
        start = time.perf_counter()
        for _ in range(n):
            session = open_(None)
            session["views"] = 1
            cookies = commit(session)
        elapsed = time.perf_counter() - start
        counters["new"] = n
        last["new"] = cookies
        return elapsed

    floor_store = {sid: record_text(manager.store.get(sid))}
    floor_start_views = json.loads(floor_store[sid])["views"]

    def floor(n: int) -> None:
        for _ in range(n):
            cookie = floor_cycle(header, floor_store)
        counters["floor"] = counters.get("floor", 0) + n
        last["floor"] = cookie

    try:
        flask_case: Optional[FlaskCase] = FlaskCase()
    except ImportError:  # Flask comes with requirements-dev.txt; without it that comparison is skipped
        flask_case = None

    plain_cls, session_cls = handler_classes(manager)
    plain_handler, session_handler = plain_cls(header), session_cls(header)

    def http_plain(n: int) -> None:
        handle = plain_handler.handle_one_request
        for _ in range(n):
            handle()

    def http_sessions(n: int) -> None:
        handle = session_handler.handle_one_request
        for _ in range(n):
            handle()

    environ = wsgi_environ(header)
    middleware = sessions.SessionMiddleware(wsgi_app, manager)
    plain_sr, session_sr = StartResponse(), StartResponse()

    def wsgi_plain(n: int) -> None:
        for _ in range(n):
            wsgi_app(environ, plain_sr)

    def wsgi_sessions(n: int) -> None:
        for _ in range(n):
            middleware(environ, session_sr)

    signed = sessions.sign(sid, SECRET)
    secrets_list = [SECRET]

    def sign(n: int) -> None:
        f = sessions.sign
        for _ in range(n):
            f(sid, SECRET)

    def unsign(n: int) -> None:
        f = sessions.unsign
        for _ in range(n):
            result = f(signed, secrets_list)
        last["unsign"] = result

    loops = {
        "sessions_modified": loaded_modified,
        "sessions_unmodified": loaded_unmodified,
        "sessions_new": new_session,
        "floor": floor,
        "http_plain": http_plain,
        "http_sessions": http_sessions,
        "wsgi_plain": wsgi_plain,
        "wsgi_sessions": wsgi_sessions,
        "sign": sign,
        "unsign": unsign,
    }
    if flask_case is not None:
        loops["flask"] = flask_case.loop
    samples = timing.interleaved(loops, reps, target_seconds)
    med = {name: timing.median(values) * 1e6 for name, values in samples.items()}

    http_extra = [a - b for a, b in zip(samples["http_sessions"], samples["http_plain"])]
    wsgi_extra = [a - b for a, b in zip(samples["wsgi_sessions"], samples["wsgi_plain"])]
    result = {
        "us": med,
        "untouched_http_us": timing.median(http_extra) * 1e6,
        "untouched_wsgi_us": timing.median(wsgi_extra) * 1e6,
        # every variant against the floor, as the median of per-repetition ratios (what the target uses)
        "vs_floor": {name: timing.median_ratio(values, samples["floor"]) for name, values in samples.items()},
        "ratio_floor": timing.median_ratio(samples["sessions_modified"], samples["floor"]),
        "ratio_flask": timing.median_ratio(samples["sessions_modified"], samples["flask"]) if flask_case else None,
        "sign_per_s": 1e6 / med["sign"],
        "unsign_per_s": 1e6 / med["unsign"],
        "reps": reps,
    }

    stored_views = json.loads(record_text(manager.store.get(sid)))["views"]
    floor_cookie = last.get("floor") or ""
    modified_cookies = last.get("modified") or []
    result["checks"] = {
        # the modified loop really wrote every change to the store, and sent a cookie
        "modified_store_writes": stored_views == counters["modified"],
        "modified_set_cookie": len(modified_cookies) == 1 and modified_cookies[0].startswith("sid=s%3A" + sid + "."),
        # the touch path sent no cookie; the new path sent one and stored each new session
        "unmodified_no_set_cookie": last.get("unmodified") == [],
        "new_set_cookie": len(last.get("new") or []) == 1,
        "new_store_writes": len(new_manager_.store) == counters["new"],
        # the floor did its work: the same cookie value as the library, every change stored
        "floor_same_cookie": floor_cookie.split(";")[0] == modified_cookies[0].split(";")[0] if modified_cookies else False,
        "floor_store_writes": json.loads(floor_store[sid])["views"] == floor_start_views + counters.get("floor", 0),
        # Flask really saved its session: the last response carries the incremented counter
        "flask_saved": flask_case is None or (flask_case.saved_views() == DATA["views"] + 1 and flask_case.responses > 0),
        # untouched requests: responses went out, with no Set-Cookie and no store traffic beyond the loops above
        "untouched_http_responses": session_handler.responses > 0 and session_handler.set_cookies == 0,
        "untouched_wsgi_responses": session_sr.calls > 0 and session_sr.set_cookies == 0,
        "unsign_ok": last.get("unsign") == sid,
    }
    result["checks"].update(path_checks())
    return result


def path_checks() -> Dict[str, bool]:
    """One request of each kind against a counting store: each path makes exactly the store calls its name
    says (untimed)."""
    store = CountingStore()
    manager = new_manager(store)
    _, header = seed(manager)

    def calls_of(action: Any) -> Tuple[Dict[str, int], Any]:
        before = dict(store.calls)
        out = action()
        return {k: store.calls[k] - before[k] for k in store.calls}, out

    def modified() -> List[str]:
        session = manager.open(header)
        session["views"] += 1
        return manager.commit(session)

    def unmodified() -> List[str]:
        session = manager.open(header)
        session["views"]
        return manager.commit(session)

    def new() -> List[str]:
        session = manager.open(None)
        session["views"] = 1
        return manager.commit(session)

    plain_cls, session_cls = handler_classes(manager)
    handler = session_cls(header)

    def untouched_http() -> int:
        handler.handle_one_request()
        return handler.set_cookies

    middleware = sessions.SessionMiddleware(wsgi_app, manager)
    start_response = StartResponse()

    def untouched_wsgi() -> int:
        middleware(wsgi_environ(header), start_response)
        return start_response.set_cookies

    checks = {}
    c, out = calls_of(modified)
    checks["path_modified"] = c["get"] == 1 and c["set"] == 0 and c["update"] == 1 and c["touch"] == 0 and len(out) == 1
    c, out = calls_of(unmodified)
    checks["path_unmodified_touch"] = c["get"] == 1 and c["set"] == c["update"] == 0 and c["touch"] == 1 and out == []
    c, out = calls_of(new)
    checks["path_new"] = c["get"] == 0 and c["set"] == 1 and len(out) == 1
    c, out = calls_of(untouched_http)
    checks["path_untouched_http"] = not any(c.values()) and out == 0 and handler.responses == 1
    c, out = calls_of(untouched_wsgi)
    checks["path_untouched_wsgi"] = not any(c.values()) and out == 0 and start_response.calls == 1
    return checks
