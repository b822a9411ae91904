"""End to end: the same ThreadingHTTPServer handler with and without sessions, over keep-alive.

Both servers run in this process (one thread each, plus one per connection); the client is another process
(``python bench/e2e.py --client``, standard library only) that sends identical GET requests over one
keep-alive ``http.client`` connection per round, with the same Cookie header (the session cookie among
neighbours) to both servers, and keeps the session cookie up to date from Set-Cookie like a browser.

A third server runs the same handler doing only the floor's work (bench/cycle.py) inline, to show what
any session design must add. Handlers set ``protocol_version = "HTTP/1.1"`` and ``disable_nagle_algorithm = True`` (SPEC section 10:
without it every response stalls on delayed ACK). Rounds alternate between the servers; the report gives
median requests/second of each, the median per-round ratio, and the server process's CPU time per request.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

NEIGHBOURS = ("theme=dark", "lang=en-GB", "_ga=GA1.2.1234567890.1700000000")


# Server side (this process) ##################################################################################


class CounterHandler(BaseHTTPRequestHandler):
    """A small page that counts views: the application work both servers do."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def next_views(self) -> int:
        self.server.views += 1  # type: ignore[attr-defined]
        return self.server.views  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        body = b"views=%d\n" % self.next_views()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # both servers stay quiet
        pass


def floor_handler_class(store: Dict[str, str]) -> type:
    """The same handler doing the floor's work inline (see bench/cycle.py): what any design must add."""
    from bench.cycle import floor_cycle

    class FloorCounterHandler(CounterHandler):
        set_cookie: Optional[str] = None

        def next_views(self) -> int:
            self.set_cookie = floor_cycle(self.headers.get("Cookie", ""), store)
            return 0

        def end_headers(self) -> None:
            if self.set_cookie:
                self.send_header("Set-Cookie", self.set_cookie)
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


class Server:
    def __init__(self, handler: type) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.views = 0  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Client:
    """The client process; one JSON command per line on its stdin, one JSON answer per line on its stdout."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--client"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def run(self, port: int, seconds: float = 0.0, requests: int = 0) -> Dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"port": port, "seconds": seconds, "requests": requests}) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark client process died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(reps: int, seconds: float) -> Dict[str, Any]:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import sessions
    from bench.cycle import MAX_AGE, SECRET

    manager = sessions.SessionManager(SECRET, store=sessions.MemoryStore(), cookie={"max_age": MAX_AGE})
    floor_store: Dict[str, str] = {}
    servers = {
        "plain": Server(CounterHandler),
        "sessions": Server(session_handler_class(manager)),
        "floor": Server(floor_handler_class(floor_store)),
    }
    client = Client()
    names = list(servers)
    samples: Dict[str, List[Dict[str, float]]] = {name: [] for name in names}
    sent = {name: 0 for name in names}
    answers: Dict[str, Dict[str, Any]] = {}
    try:
        # Prime: the first request creates the session and the client stores its cookie.
        prime = client.run(servers["sessions"].port, requests=1)
        sent["sessions"] += prime["requests"]
        if prime.get("sid"):
            floor_store[prime["sid"]] = manager.store.get(prime["sid"])[0]  # (record, deadline)
        warm = max(0.2, seconds / 4)
        for name in names:
            sent[name] += client.run(servers[name].port, seconds=warm)["requests"]
        for rep in range(reps):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                cpu = _cpu()
                answer = client.run(servers[name].port, seconds=seconds)
                cpu = _cpu() - cpu
                sent[name] += answer["requests"]
                answers[name] = answer
                samples[name].append({
                    "rps": answer["requests"] / answer["elapsed"],
                    "server_cpu_us": cpu / answer["requests"] * 1e6,
                })
    finally:
        client.close()
        for server in servers.values():
            server.close()

    def med(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    ratios = [s["rps"] / p["rps"] for s, p in zip(samples["sessions"], samples["plain"])]
    floor_ratios = [f["rps"] / p["rps"] for f, p in zip(samples["floor"], samples["plain"])]
    cpu_ratios = [s["server_cpu_us"] / p["server_cpu_us"] for s, p in zip(samples["sessions"], samples["plain"])]
    sid = prime.get("sid")
    got = manager.store.get(sid) if sid else None  # (record, deadline) or None
    record = got[0] if got else None
    stored_views = json.loads(record)["views"] if record else None
    return {
        "plain_rps": med("plain", "rps"),
        "sessions_rps": med("sessions", "rps"),
        "ratio": statistics.median(ratios),
        # the spread of the per-round ratios: wide when other processes competed for the 2 cores
        "ratio_quartiles": _quartiles(ratios),
        "floor_ratio_quartiles": _quartiles(floor_ratios),
        "floor_rps": med("floor", "rps"),
        "floor_ratio": statistics.median(floor_ratios),
        "plain_server_cpu_us": med("plain", "server_cpu_us"),
        "floor_server_cpu_us": med("floor", "server_cpu_us"),
        "sessions_server_cpu_us": med("sessions", "server_cpu_us"),
        "server_cpu_ratio": statistics.median(cpu_ratios),
        "reps": reps,
        "seconds": seconds,
        "checks": {
            # every request to the session server loaded and saved the session: the stored counter equals
            # the number of requests, and the client kept one cookie throughout
            "e2e_session_saved_every_request": stored_views == sent["sessions"] and sent["sessions"] > 1,
            "e2e_session_cookie_sent": prime.get("set_cookies", 0) == 1 and bool(sid),
            "e2e_same_session": answers.get("sessions", {}).get("sid") == sid,
            "e2e_plain_served": servers["plain"].httpd.views == sent["plain"] and sent["plain"] > 0,  # type: ignore[attr-defined]
            "e2e_plain_no_cookie": answers.get("plain", {}).get("set_cookies") == 0,
            "e2e_floor_cookie": answers.get("floor", {}).get("set_cookies", 0) > 0 and answers["floor"].get("sid") == sid,
            "e2e_keep_alive": all(a.get("connections") == 1 for a in answers.values()) and len(answers) == 3,
            "e2e_all_200": all(a.get("ok") for a in answers.values()) and bool(prime.get("ok")),
        },
    }


def _quartiles(values: List[float]) -> List[float]:
    if len(values) < 2:
        return [values[0], values[0]] if values else [0.0, 0.0]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


# Client side (another process) ###############################################################################


def _client_main() -> None:
    from urllib.parse import unquote

    sid_value: Optional[str] = None  # the session cookie's value, as a browser would keep it
    for line in sys.stdin:
        command = json.loads(line)
        header = "; ".join(NEIGHBOURS[:2] + ((f"sid={sid_value}",) if sid_value else ()) + NEIGHBOURS[2:])
        conn = http.client.HTTPConnection("127.0.0.1", command["port"])
        connections, count, set_cookies, ok = 1, 0, 0, True
        limit = command["requests"] or None
        start = time.perf_counter()
        deadline = start + command["seconds"]
        while True:
            conn.request("GET", "/", headers={"Cookie": header})
            response = conn.getresponse()
            response.read()
            count += 1
            ok = ok and response.status == 200
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", command["port"])
                connections += 1
            set_cookie = response.getheader("Set-Cookie")
            if set_cookie:
                set_cookies += 1
                pair = set_cookie.split(";", 1)[0]
                if pair.startswith("sid="):
                    if pair[4:] != sid_value:
                        sid_value = pair[4:]
                        header = "; ".join(NEIGHBOURS[:2] + (f"sid={sid_value}",) + NEIGHBOURS[2:])
            if (limit is not None and count >= limit) or (limit is None and time.perf_counter() >= deadline):
                break
        elapsed = time.perf_counter() - start
        conn.close()
        sid = None
        if sid_value:
            signed = unquote(sid_value)
            sid = signed[2:].rsplit(".", 1)[0] if signed.startswith("s:") else None
        print(json.dumps({
            "requests": count, "elapsed": elapsed, "ok": ok, "set_cookies": set_cookies,
            "connections": connections, "sid": sid,
        }), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["--client"]:
    _client_main()
