"""End to end: every server variant in its own process, one client process interleaving request by request.

The servers are bench/servers.py's variants (plain, fair limit, sessions, floor inline) and, when Node and
``bench/express/node_modules`` are there, express-session's reference app (bench/express/app.js: plain,
fair limit, express-session). The client (``python bench/e2e.py --client``, standard library, raw sockets)
keeps one keep-alive connection per server and sends one request to each server per round, in an order
shuffled every round, so whatever else the machine does hits every variant alike. It times each
request from the first byte sent to the last byte received; per variant and block of rounds, the figures
use the mean of the fastest 90% (``trimmed_mean``: on 2 shared cores a request now and then waits
milliseconds for a core; the untrimmed figures are in the JSON too).

Two clients, one after the other, each against every server:

- ping-pong: one request in flight; a variant's req/s is one over its (trimmed) mean latency, which is
  what a one-connection client would get from it alone.
- pipelined (server-bound): a batch of ``depth`` requests is sent at once and all responses are read, so
  the server always has work waiting; req/s is requests over (trimmed) batch time.

Ratios are taken per block (plain's time per request over the variant's, in the same block) and the report
gives their median and middle half. "fair" receives the same Cookie header as the session server and sends
the session's response headers as static text; "plain" receives only the neighbour cookies and sends none:
fair/plain is what the protocol bytes cost, sessions/fair what the session work costs. Server CPU per
request is each server process's own CPU time (getrusage / process.cpuUsage) over the measured phase.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
EXPRESS_DIR = os.path.join(HERE, "express")
NEIGHBOURS = ("theme=dark", "lang=en-GB", "_ga=GA1.2.1234567890.1700000000")
TRIM_KEEP = 0.9  # the share of each block's requests that the figures use (see trimmed_mean)


def cookie_header(pair: Optional[str]) -> str:
    """The Cookie header a browser sends: the neighbours, with the session cookie among them if it has one."""
    return "; ".join(NEIGHBOURS[:2] + ((pair,) if pair else ()) + NEIGHBOURS[2:])


class ServerProcess:
    """One server variant in its own process, stopped by its PID."""

    def __init__(self, name: str, argv: List[str], cwd: Optional[str] = None) -> None:
        from bench import child_env  # not at the top: this file is also the client process, stdlib only

        self.name = name
        self.proc = subprocess.Popen(argv, cwd=cwd, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.close()
            raise RuntimeError(f"server {name} did not start")
        self.hello: Dict[str, Any] = json.loads(line)
        self.port: int = self.hello["port"]

    def stats(self) -> Dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def get(self, cookie: str) -> Tuple[int, List[Tuple[str, str]]]:
        """One request outside the measurement (priming); returns status and response headers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/", headers={"Cookie": cookie})
            response = conn.getresponse()
            response.read()
            return response.status, response.getheaders()
        finally:
            conn.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # this Popen's own PID
                self.proc.wait(timeout=5)


def python_server(variant: str, config: Optional[Dict[str, Any]] = None) -> ServerProcess:
    argv = [sys.executable, os.path.join(HERE, "servers.py"), variant]
    return ServerProcess(variant, argv + ([json.dumps(config)] if config else []))


def express_status() -> Optional[str]:
    """None when express-session's app can run, else why not (shown in the table)."""
    if shutil.which("node") is None:
        return "n/a (node not installed)"
    if not os.path.isdir(os.path.join(EXPRESS_DIR, "node_modules", "express-session")):
        return "n/a (run npm ci in bench/express)"
    return None


def express_server(mode: str, config: Optional[Dict[str, Any]] = None) -> ServerProcess:
    argv = ["node", "app.js", mode] + ([json.dumps(config)] if config else [])
    return ServerProcess("express_" + mode, argv, cwd=EXPRESS_DIR)


def session_response_headers(headers: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    return [(n, v) for n, v in headers if n.lower() in ("set-cookie", "cache-control", "vary")]


def start_servers(with_express: bool) -> Tuple[Dict[str, ServerProcess], Dict[str, str], Dict[str, Any]]:
    """Start every variant; returns (servers, Cookie header per variant, priming facts for the checks)."""
    servers: Dict[str, ServerProcess] = {}
    cookies: Dict[str, str] = {}
    prime: Dict[str, Any] = {}
    try:
        sessions_server = servers["sessions"] = python_server("sessions")
        pair = sessions_server.hello["cookie"]
        status, headers = sessions_server.get(cookie_header(pair))
        sent = session_response_headers(headers)
        set_cookie = next((v for n, v in sent if n.lower() == "set-cookie"), "")
        prime["sessions"] = {"status": status, "headers": sent, "same_pair": set_cookie.split(";", 1)[0] == pair}
        servers["plain"] = python_server("plain")
        servers["fair"] = python_server("fair", {"headers": sent})
        servers["floor"] = python_server("floor", {
            "sid": sessions_server.hello["sid"], "record": sessions_server.hello["record"],
            "cookie_suffix": ";" + set_cookie.split(";", 1)[1],
            "headers": [(n, v) for n, v in sent if n.lower() != "set-cookie"],
        })
        cookies.update(plain=cookie_header(None), fair=cookie_header(pair), sessions=cookie_header(pair),
                       floor=cookie_header(pair))
        prime["fair_headers"] = session_response_headers(servers["fair"].get(cookies["fair"])[1]) == sent
        # the floor computes its own Set-Cookie: the same pair and attributes, then the same other headers
        prime["floor_headers"] = session_response_headers(servers["floor"].get(cookies["floor"])[1]) == sent
        if with_express:
            express = servers["express_session"] = express_server("session")
            status, headers = express.get(cookie_header(None))  # creates the session, as a browser's first visit
            sent = session_response_headers(headers)
            set_cookie = next((v for n, v in sent if n.lower() == "set-cookie"), "")
            express_pair = set_cookie.split(";", 1)[0]
            prime["express_session"] = {"status": status, "headers": sent, "same_pair": express_pair.startswith("sid=s%3A")}
            servers["express_plain"] = express_server("plain")
            servers["express_fair"] = express_server("fair", {"headers": sent})
            cookies.update(express_plain=cookie_header(None), express_fair=cookie_header(express_pair),
                           express_session=cookie_header(express_pair))
            fair_sent = servers["express_fair"].get(cookies["express_fair"])[1]
            prime["express_fair_headers"] = session_response_headers(fair_sent) == sent
    except BaseException:
        for server in servers.values():
            server.close()
        raise
    return servers, cookies, prime


class Client:
    """The client process; one JSON command per line on its stdin, one JSON answer per line on its stdout."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--client"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self, command: Dict[str, Any]) -> Dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark client process died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def quartiles(values: List[float]) -> List[float]:
    if len(values) < 2:
        return [values[0], values[0]] if values else [0.0, 0.0]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def measure(client: Client, servers: Dict[str, ServerProcess], cookies: Dict[str, str], depth: int,
            blocks: int, rounds: int) -> Dict[str, Any]:
    """One client's interleaved run over every server; per-variant req/s, per-block ratios, CPU/request."""
    names = list(servers)
    targets = [{"name": n, "port": servers[n].port, "cookie": cookies[n]} for n in names]
    client.run({"targets": targets, "depth": depth, "blocks": 1, "rounds": max(20, rounds // 4)})  # warm up
    before = {n: servers[n].stats() for n in names}
    answer = client.run({"targets": targets, "depth": depth, "blocks": blocks, "rounds": rounds})
    after = {n: servers[n].stats() for n in names}
    out: Dict[str, Any] = {"depth": depth, "blocks": blocks, "rounds": rounds, "variants": {}}
    for n in names:
        a = answer[n]
        served = after[n]["requests"] - before[n]["requests"]
        out["variants"][n] = {
            "rps": a["requests"] / sum(a["seconds"]),
            "rps_untrimmed": a["requests"] / sum(a["raw_seconds"]),
            "server_cpu_us": (after[n]["cpu_us"] - before[n]["cpu_us"]) / max(served, 1),
            "requests": a["requests"], "served": served, "ok": a["ok"], "connections": a["connections"],
            "set_cookies": a["set_cookies"], "cookie_changed": a["cookie_changed"],
            # how many of the measured requests' changes the session store kept (session variants)
            "views_gained": (after[n]["views"] - before[n]["views"]) if after[n]["views"] is not None else None,
        }

    def per_block(num: str, den: str) -> List[float]:
        # den's time per request over num's: num's throughput relative to den's, block by block
        return [d / v for v, d in zip(answer[num]["seconds"], answer[den]["seconds"])]

    ratios: Dict[str, Dict[str, Any]] = {}
    pairs = [("fair", "plain"), ("sessions", "plain"), ("sessions", "fair"), ("floor", "plain"),
             ("floor", "fair")]
    if "express_session" in servers:
        pairs += [("express_fair", "express_plain"), ("express_session", "express_plain"),
                  ("express_session", "express_fair")]
    for num, den in pairs:
        values = per_block(num, den)
        ratios[f"{num}/{den}"] = {"median": statistics.median(values), "quartiles": quartiles(values), "blocks": values}
    if "express_session" in servers:
        for den, express_den in (("plain", "express_plain"), ("fair", "express_fair")):
            ours, theirs = per_block("sessions", den), per_block("express_session", express_den)
            diffs = [a - b for a, b in zip(ours, theirs)]
            ratios[f"advantage/{den}"] = {"median": statistics.median(diffs), "quartiles": quartiles(diffs)}
    for r in ratios.values():
        r.pop("blocks", None)
    untrimmed = [f / v for v, f in zip(answer["sessions"]["raw_seconds"], answer["fair"]["raw_seconds"])]
    ratios["sessions/fair untrimmed"] = {"median": statistics.median(untrimmed), "quartiles": quartiles(untrimmed)}
    out["ratios"] = ratios
    return out


def run(blocks: int, rounds: int, pipeline_blocks: int, pipeline_rounds: int, depth: int) -> Dict[str, Any]:
    express_missing = express_status()
    servers, cookies, prime = start_servers(with_express=express_missing is None)
    client = Client()
    try:
        pingpong = measure(client, servers, cookies, 1, blocks, rounds)
        pipelined = measure(client, servers, cookies, depth, pipeline_blocks, pipeline_rounds)
        final = {n: s.stats() for n, s in servers.items()}
    finally:
        client.close()
        for server in servers.values():
            server.close()

    def all_variants(check: Any) -> bool:
        return all(check(run["variants"][n], n) for run in (pingpong, pipelined) for n in servers)

    session_like = ("fair", "sessions", "floor", "express_fair", "express_session")
    checks = {
        # the seeded session's Set-Cookie keeps its id; the sessions server saved every request's change:
        # the stored counter equals the number of requests it served (priming and warm-ups included)
        "e2e_session_cookie_sent": prime["sessions"]["same_pair"] and prime["sessions"]["status"] == 200,
        "e2e_session_saved_every_request": final["sessions"]["views"] == final["sessions"]["requests"] > 1,
        # every response of a session-like variant carried a Set-Cookie with the same id the client sends;
        # plain ones none
        "e2e_set_cookie_every_response": all_variants(
            lambda v, n: v["set_cookies"] == v["requests"] if n in session_like else v["set_cookies"] == 0),
        "e2e_same_session": all_variants(lambda v, n: v["cookie_changed"] == 0),
        # the fair limit and the floor send the session server's Set-Cookie, Cache-Control and Vary headers
        "e2e_fair_same_headers": bool(prime["sessions"]["headers"]) and prime["fair_headers"],
        "e2e_floor_same_headers": prime["floor_headers"],
        "e2e_keep_alive": all_variants(lambda v, n: v["connections"] == 1),
        "e2e_all_200": all_variants(lambda v, n: v["ok"]),
        # each server answered exactly the requests the client counted
        "e2e_served_counted": all_variants(lambda v, n: v["served"] == v["requests"] > 0),
    }
    if express_missing is None:
        # ping-pong only: pipelined, express-session (which saves after the response) lets the next request
        # load the record before the previous one's save, and loses updates; reported, not checked
        express = pingpong["variants"]["express_session"]
        checks["express_session_saved_every_request"] = express["views_gained"] == express["requests"] > 0
        checks["express_cookie_sent"] = prime["express_session"]["same_pair"]
        checks["express_fair_same_headers"] = prime["express_fair_headers"]
    return {"pingpong": pingpong, "pipelined": pipelined, "express": express_missing or "ran",
            "variants": list(servers), "checks": checks}


# Client side (another process) ###############################################################################


def trimmed_mean(times: List[float], keep: float = TRIM_KEEP) -> float:
    """The mean of the fastest ``keep`` share of ``times``: on a shared machine a request now and then waits
    milliseconds for a core that another process holds, which says nothing about the variant it hit."""
    fastest = sorted(times)[: max(1, int(len(times) * keep))]
    return sum(fastest) / len(fastest)


def round_orders(n: int, seed: int = 12) -> Iterator[List[int]]:
    """The order of the n variants in each round: a fresh shuffle every round, so that no variant always
    follows the same neighbour (with a fixed cyclic order, plain came right after sessions every time)."""
    rng = random.Random(seed)
    order = list(range(n))
    while True:
        rng.shuffle(order)
        yield order


class Conn:
    """One keep-alive connection to one server, with its request bytes and response tallies."""

    def __init__(self, name: str, port: int, cookie: str, depth: int) -> None:
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n").encode() * depth
        self.depth = depth
        pair = next((p for p in cookie.split("; ") if p.startswith("sid=")), None)
        self.pair = pair.encode() if pair else None
        self.buf = b""
        self.last_head = b""
        self.ok = True
        self.closed = False
        self.set_cookies = 0
        self.cookie_changed = 0

    def exchange(self) -> None:
        """Send one batch, read all its responses."""
        self.sock.sendall(self.request)
        self.receive()

    def receive(self) -> None:
        """Read one batch of responses, tallying their status, Set-Cookie and Connection headers."""
        sock, buf = self.sock, self.buf
        for _ in range(self.depth):
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                chunk = sock.recv(262144)
                if not chunk:
                    raise RuntimeError(f"{self.name} closed the connection")
                buf += chunk
                end = buf.find(b"\r\n\r\n")
            self.last_head = raw = buf[:end]
            head = raw.lower()
            if head[9:12] != b"200":
                self.ok = False
            i = head.find(b"\r\ncontent-length:") + 17
            j = head.find(b"\r\n", i)
            total = end + 4 + int(head[i:j] if j > 0 else head[i:])
            while len(buf) < total:
                chunk = sock.recv(262144)
                if not chunk:
                    raise RuntimeError(f"{self.name} closed the connection")
                buf += chunk
            k = head.find(b"\r\nset-cookie: ")
            if k >= 0:
                self.set_cookies += 1
                if self.pair is None or buf[k + 14 : k + 14 + len(self.pair) + 1] != self.pair + b";":
                    self.cookie_changed += 1
            if b"\r\nconnection: close" in head:
                self.closed = True
            buf = buf[total:]
        self.buf = buf

    def last_headers(self) -> List[Tuple[str, str]]:
        lines = self.last_head.decode("latin-1").split("\r\n")[1:]
        return [(name, value.strip()) for name, _, value in (line.partition(":") for line in lines)]


def _client_main() -> None:
    perf = time.perf_counter
    for line in sys.stdin:
        command = json.loads(line)
        conns = [Conn(t["name"], t["port"], t["cookie"], command["depth"]) for t in command["targets"]]
        n = len(conns)
        seconds: Dict[str, List[float]] = {c.name: [] for c in conns}
        trimmed: Dict[str, List[float]] = {c.name: [] for c in conns}
        orders = round_orders(n)
        for _ in range(command["blocks"]):
            spent: List[List[float]] = [[] for _ in conns]
            for _ in range(command["rounds"]):
                for i in next(orders):
                    conn = conns[i]
                    start = perf()
                    conn.exchange()
                    spent[i].append(perf() - start)
            for conn, times in zip(conns, spent):
                seconds[conn.name].append(sum(times))
                trimmed[conn.name].append(trimmed_mean(times) * len(times))
        answer = {}
        for conn in conns:
            conn.sock.close()
            answer[conn.name] = {
                "requests": command["blocks"] * command["rounds"] * conn.depth, "raw_seconds": seconds[conn.name],
                "seconds": trimmed[conn.name],
                "ok": conn.ok, "connections": 2 if conn.closed else 1, "set_cookies": conn.set_cookies,
                "cookie_changed": conn.cookie_changed,
            }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["--client"]:
    _client_main()
