"""In-process full request: the end-to-end handlers over real loopback sockets, without a client process.

Each variant of bench/servers.py (plain, fair, sessions, floor) gets one accepted loopback TCP connection
and one handler object set up as ``socketserver`` would (``setup()``: socket files, Nagle off). A request is:
send the request bytes on the client socket, ``handler.handle_one_request()`` (parse the request line and
headers, run ``do_GET``, write the response to the socket), receive and parse the response on the client
socket. All in one thread, so a request's time is all CPU work plus the socket system calls; variants take
turns request by request, as in bench/e2e.py, with the same Cookie headers, and the figures are the same
trimmed means per block.

Inside a running server the session work costs about 3x its tight-loop time (cache and branch-predictor
state between requests; see /work/shared/PERF.md). The "session work" here is sessions minus fair per
request, set beside the same difference for the floor and beside the tight-loop figures of bench/cycle.py.
Two runs: warm (requests back to back, the four handlers sharing one process's caches) and cold (before
each request, untimed, ``cache_scrubber`` does roughly what the other processes of a loaded server machine
do between two requests of one server), which is the one to set beside the end-to-end CPU delta.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from bench import record_text, servers
from bench.e2e import Conn, cookie_header, quartiles, round_orders, session_response_headers, trimmed_mean

VARIANTS = ("plain", "fair", "sessions", "floor")


class FakeServer:
    """What a handler reads from its server: the request counter."""

    requests = 0


class Pair:
    """One loopback connection: the client end (an e2e ``Conn``) and the server end's handler."""

    def __init__(self, listener: socket.socket, handler_class: type, name: str, cookie: str) -> None:
        port = listener.getsockname()[1]
        self.client = Conn(name, port, cookie, 1)
        conn, address = listener.accept()
        self.server = FakeServer()
        handler = handler_class.__new__(handler_class)  # what socketserver's __init__ does, minus handle()
        handler.request, handler.client_address, handler.server = conn, address, self.server
        handler.setup()
        self.handler = handler
        self.conn = conn

    def request(self) -> None:
        client = self.client
        client.sock.sendall(client.request)
        self.handler.handle_one_request()
        client.receive()

    def headers(self) -> List[Tuple[str, str]]:
        """One request whose response headers are returned (priming, outside the measurement)."""
        self.client.sock.sendall(self.client.request)
        self.handler.handle_one_request()
        self.client.receive()
        return self.client.last_headers()

    def close(self) -> None:
        self.handler.finish()
        self.conn.close()
        self.client.sock.close()


def cache_scrubber(megabytes: int = 1) -> Callable[[], None]:
    """What the other processes of a real server machine do between two requests of one server, roughly:
    overwrite a megabyte of memory (the L2 cache's worth of data and code lines) and run unrelated
    interpreter code (branch predictors, instruction cache)."""
    buffer, source = bytearray(megabytes << 20), bytes(megabytes << 20)
    junk = {f"k{i}": [i, str(i), {"x": i / 3}] for i in range(300)}
    dumps = json.dumps

    def scrub() -> None:
        buffer[:] = source
        dumps(junk)

    return scrub


def run(blocks: int, rounds: int, cold: bool = False) -> Dict[str, Any]:
    """``cold``: run ``cache_scrubber()`` before each request, outside its timing."""
    scrub: Optional[Callable[[], None]] = cache_scrubber() if cold else None
    manager = servers.new_manager()
    sid, pair = servers.seed_session(manager)
    session_cookie, plain_cookie = cookie_header(pair), cookie_header(None)
    listener = socket.create_server(("127.0.0.1", 0))
    pairs: Dict[str, Pair] = {}
    try:
        pairs["sessions"] = Pair(listener, servers.session_handler_class(manager), "sessions", session_cookie)
        sent = session_response_headers(pairs["sessions"].headers())
        set_cookie = next(v for n, v in sent if n.lower() == "set-cookie")
        others = [(n, v) for n, v in sent if n.lower() != "set-cookie"]
        store = {sid: record_text(manager.store.get(sid))}
        pairs["plain"] = Pair(listener, servers.CounterHandler, "plain", plain_cookie)
        pairs["fair"] = Pair(listener, servers.fair_handler_class(sent), "fair", session_cookie)
        pairs["floor"] = Pair(listener, servers.floor_handler_class(store, ";" + set_cookie.split(";", 1)[1], others),
                              "floor", session_cookie)
        order = [pairs[n] for n in VARIANTS]
        for _ in range(max(20, rounds // 4)):  # warm up
            for p in order:
                p.request()
        warm = {n: (pairs[n].client.set_cookies, pairs[n].server.requests) for n in VARIANTS}
        samples: Dict[str, List[float]] = {n: [] for n in VARIANTS}
        perf = time.perf_counter
        n_var = len(order)
        orders = round_orders(n_var)
        for _ in range(blocks):
            spent: List[List[float]] = [[] for _ in order]
            for _ in range(rounds):
                for i in next(orders):
                    if scrub is not None:
                        scrub()
                    start = perf()
                    order[i].request()
                    spent[i].append(perf() - start)
            for name, times in zip(VARIANTS, spent):
                samples[name].append(trimmed_mean(times) * 1e6)
        stored_views = json.loads(record_text(manager.store.get(sid)))["views"]
        tallies = {n: {"set_cookies": pairs[n].client.set_cookies - warm[n][0],
                       "served": pairs[n].server.requests - warm[n][1], "ok": pairs[n].client.ok,
                       "changed": pairs[n].client.cookie_changed} for n in VARIANTS}
    finally:
        for p in pairs.values():
            p.close()
        listener.close()

    def diff(a: str, b: str) -> List[float]:
        return [x - y for x, y in zip(samples[a], samples[b])]

    session_work, floor_work = diff("sessions", "fair"), diff("floor", "fair")
    ratios = [s / f for s, f in zip(session_work, floor_work) if f > 0]
    measured = blocks * rounds
    return {
        "us": {n: statistics.median(v) for n, v in samples.items()},
        "session_work_us": statistics.median(session_work),
        "floor_work_us": statistics.median(floor_work),
        "protocol_bytes_us": statistics.median(diff("fair", "plain")),
        "ratio": statistics.median(ratios) if ratios else float("inf"),
        "ratio_quartiles": quartiles(ratios) if ratios else [0.0, 0.0],
        "blocks": blocks, "rounds": rounds, "cold": cold,
        "checks": {f"{name}{'_cold' if cold else ''}": ok for name, ok in {
            # every measured request went through the real handler and came back whole, with a 200
            "inprocess_all_served": all(t["served"] == measured and t["ok"] for t in tallies.values()),
            # the session variant saved every request (the stored counter counts priming + warm-up + measured)
            "inprocess_session_saved": stored_views == pairs["sessions"].server.requests > measured,
            # session-like variants sent a Set-Cookie with the unchanged id on each response; plain none
            "inprocess_set_cookies": all(tallies[n]["set_cookies"] == measured and tallies[n]["changed"] == 0
                                         for n in ("fair", "sessions", "floor")) and tallies["plain"]["set_cookies"] == 0,
        }.items()},
    }
