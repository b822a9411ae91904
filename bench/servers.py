"""The end-to-end servers: one counter page in several variants, each run in its own process.

``python bench/servers.py <variant> [json]`` serves the page on a free 127.0.0.1 port, prints one JSON line
(``{"port": ...}``, plus the seeded session for ``sessions``), then answers each ``stats`` line on its stdin
with ``{"requests", "cpu_us", "views"}`` (``cpu_us``: the process's own CPU time, all threads, from
``getrusage``) and exits when stdin closes. ``bench/express/app.js`` (express and
express-session) speaks the same protocol.

Variants (all ``ThreadingHTTPServer``, HTTP/1.1 keep-alive, Nagle off, the same handler underneath):

- ``plain``: the page alone.
- ``fair``: the page plus the session's response headers (Set-Cookie, Cache-Control, Vary) as static text
  given in json.headers; its client sends it the same Cookie header as the session server. What sessions
  cost beyond the protocol bytes is measured against this one: the fair limit.
- ``sessions``: ``sessions.SessionHandlerMixin`` with a MemoryStore; each request loads the session,
  increments a counter and saves it (a Set-Cookie every response: the cookie has a max_age).
- ``floor``: the floor's work inline (bench/cycle.py ``floor_cycle``: split, HMAC verify, JSON load and
  dump, dict write, sign) with the same response headers: what any session design must add.

The handler classes are also used in process by bench/inprocess.py.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __name__ == "__main__":  # run as a server process: bench.e2e passes PYTHONPATH (bench.child_env)
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import record_text  # noqa: E402

Headers = Sequence[Tuple[str, str]]


class CounterHandler(BaseHTTPRequestHandler):
    """A small page that counts views: the application work every variant does."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # SPEC section 10: without it every keep-alive response stalls on delayed ACK
    extra_headers: Headers = ()

    def next_views(self) -> int:
        return self.server.requests  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        body = b"views=%d\n" % self.next_views()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in self.extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def fair_handler_class(headers: Headers) -> type:
    return type("FairCounterHandler", (CounterHandler,), {"extra_headers": tuple(map(tuple, headers))})


def floor_handler_class(store: Dict[str, str], cookie_suffix: str, headers: Headers) -> type:
    """The floor's work inline; sends its own cookie pair with the session cookie's attributes
    (``cookie_suffix``), then the other session headers, so the bytes match the session server's."""
    from bench.cycle import floor_cycle

    class FloorCounterHandler(CounterHandler):
        def next_views(self) -> int:
            cookie = floor_cycle(self.headers.get("Cookie", ""), store)
            if cookie is not None:
                self.pending_cookie = cookie.split(";", 1)[0] + cookie_suffix
            return 0

        pending_cookie: Optional[str] = None

        def end_headers(self) -> None:
            if self.pending_cookie is not None:
                self.send_header("Set-Cookie", self.pending_cookie)
                for name, value in headers:
                    self.send_header(name, value)
                self.pending_cookie = None
            super().end_headers()

    return FloorCounterHandler


def session_handler_class(manager: Any) -> type:
    import sessions

    class SessionCounterHandler(sessions.SessionHandlerMixin, CounterHandler):
        session_manager = manager

        def next_views(self) -> int:
            session = self.session
            session["views"] = views = session.get("views", 0) + 1
            return views

    return SessionCounterHandler


def new_manager() -> Any:
    import sessions
    from bench.cycle import MAX_AGE, SECRET

    return sessions.SessionManager(SECRET, store=sessions.MemoryStore(), cookie={"max_age": MAX_AGE})


def seed_session(manager: Any) -> Tuple[str, str]:
    """Store the benchmark's session (bench/cycle.py DATA); returns (sid, cookie pair ``sid=...``)."""
    from bench.cycle import DATA

    session = manager.open(None)
    session.update(DATA)
    return session.id, manager.commit(session)[0].split(";", 1)[0]


def session_headers(response_headers: List[Tuple[str, str]]) -> Tuple[str, List[Tuple[str, str]]]:
    """From a session response's headers: (the Set-Cookie attributes after the pair, the other session
    headers) -- what the fair and floor variants send."""
    cookie = next(v for n, v in response_headers if n.lower() == "set-cookie")
    others = [(n, v) for n, v in response_headers if n.lower() in ("cache-control", "vary")]
    return ";" + cookie.split(";", 1)[1], others


# Server process ###############################################################################################


def _cpu_us() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1e6


def serve(variant: str, config: Dict[str, Any]) -> None:
    hello: Dict[str, Any] = {}
    views_of = None
    if variant == "plain":
        handler = CounterHandler
    elif variant == "fair":
        handler = fair_handler_class(config["headers"])
    elif variant == "floor":
        store = {config["sid"]: config["record"]}
        handler = floor_handler_class(store, config["cookie_suffix"], config["headers"])
    elif variant == "sessions":
        manager = new_manager()
        sid, pair = seed_session(manager)
        hello = {"sid": sid, "cookie": pair, "record": record_text(manager.store.get(sid))}
        handler = session_handler_class(manager)

        def views_of() -> Optional[int]:
            return json.loads(record_text(manager.store.get(sid)))["views"]
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.requests = 0  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
    print(json.dumps({"port": httpd.server_address[1], **hello}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps({"requests": httpd.requests, "cpu_us": _cpu_us(),  # type: ignore[attr-defined]
                              "views": views_of() if views_of else None}), flush=True)
    httpd.shutdown()
    httpd.server_close()


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
