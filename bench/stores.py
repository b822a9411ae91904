"""Persistent stores: the per-request cycle on SQLiteStore and RedisStore, beside Flask-Session's Redis backend.

Every variant runs the same four request kinds against the same data (bench/cycle.py's session):

- untouched: the session is never read (``manager.open_lazy`` + ``commit``; Flask-Session opens and saves
  every request's session whether the view reads it or not);
- read-only: open + read one key + commit (our stores touch; Flask-Session rewrites the record);
- modified: open + one change + commit;
- new: no cookie, one write, commit.

Redis is a real ``redis-server`` started here on a free loopback port (``--save "" --appendonly no``) and
stopped by its PID; both libraries get a ``redis.Redis`` client to it. Flask-Session 0.8 runs as documented
(``SESSION_TYPE="redis"``, ``Session(app)``, defaults otherwise: msgspec msgpack, unsigned id cookie, permanent
sessions refreshed on every request); its ``open_session`` + ``save_session`` are timed with request and
response objects built outside the timed region, as for Flask's cookie session in bench/cycle.py.

Read-only requests with ``touch_after`` on SQLiteStore and RedisStore (their read is then the only store
call) are two more variants. The variants (3 stores x 4 kinds, plus those two) take turns request by
request, in an order shuffled every round, and each figure is the median over blocks of the block's
trimmed mean (the fastest 90%), as end to end.

Store round trips per request kind are counted untimed (and once more for read-only requests with
``touch_after``, where the read should be the only one): for Redis, the client's connection counts each
``send_packed_command`` (one per command, one per pipeline) and the server's ``INFO commandstats`` names the
commands executed; for SQLite, a trace callback on the store's connections counts the statements executed
and the transactions (``BEGIN``).

SQLiteStore is also run by 4 processes on one file at once, each cycling through its own sessions for the
same wall-clock window; the figure is their total cycles per second.

A store class missing from the sessions.py in use (run with ``PYTHONPATH`` pointing at another copy to try
one) gives an "n/a" row instead of figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import sessions

from bench import child_env, record_text, timing
from bench.e2e import round_orders, trimmed_mean
from bench.cycle import DATA, MAX_AGE, SECRET, cookie_header, set_cookie_value

KINDS = ("untouched", "read_only", "modified", "new")
TOUCH_AFTER = 600  # seconds: the touch_after variants' throttle, longer than their requests take
HERE = os.path.dirname(os.path.abspath(__file__))


# Our stores: the four kinds as loops ##########################################################################


class Ours:
    """One manager over one store, with a seeded session; ``loops`` are the timed request kinds."""

    def __init__(self, store: Any, **options: Any) -> None:
        self.manager = sessions.SessionManager(SECRET, store=store, cookie={"max_age": MAX_AGE}, **options)
        session = self.manager.open(None)
        session.update(DATA)
        self.sid = session.id
        self.header = cookie_header(self.manager.name, set_cookie_value(self.manager.commit(session)[0]))
        self.cookies: Dict[str, List[str]] = {}

    def request(self, kind: str) -> List[str]:
        manager, header = self.manager, self.header
        if kind == "untouched":
            session = manager.open_lazy(lambda: (header, False, "/"))
        elif kind == "new":
            session = manager.open(None)
            session["views"] = 1
        else:
            session = manager.open(header)
            if kind == "modified":
                session["views"] += 1
            else:
                session["views"]
        return manager.commit(session)

    def prepare(self, kind: str, n: int) -> None:
        """Nothing to build ahead: the request is the Cookie header."""

    def one(self, kind: str) -> None:
        self.cookies[kind] = self.request(kind)

    def views(self) -> int:
        return json.loads(record_text(self.manager.store.get(self.sid)))["views"]


# Flask-Session ##############################################################################################


class FlaskSessionRedis:
    """Flask-Session's Redis backend, configured as its documentation shows, with the same data."""

    def __init__(self, client: Any) -> None:
        import flask
        from flask_session import Session
        from werkzeug.test import EnvironBuilder

        self.app = flask.Flask("bench_flask_session")
        self.app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client, PERMANENT_SESSION_LIFETIME=MAX_AGE)
        Session(self.app)
        self.interface = self.app.session_interface
        self.name = self.app.config["SESSION_COOKIE_NAME"]
        self.blank = EnvironBuilder(path="/").get_environ()
        session = self.interface.open_session(self.app, self.app.request_class(dict(self.blank)))
        session.update(DATA)
        response = self.app.response_class()
        self.interface.save_session(self.app, session, response)
        self.sid = session.sid
        value = set_cookie_value(response.headers.getlist("Set-Cookie")[0])
        self.environ = EnvironBuilder(path="/", headers={"Cookie": cookie_header(self.name, value)}).get_environ()
        self.set_cookies: Dict[str, int] = {}
        self.pending: Dict[str, List[Tuple[Any, Any]]] = {}

    def pairs(self, kind: str, n: int) -> List[Tuple[Any, Any]]:
        app, environ = self.app, self.blank if kind == "new" else self.environ
        return [(app.request_class(dict(environ)), app.response_class()) for _ in range(n)]

    @staticmethod
    def request(app: Any, interface: Any, kind: str, request: Any, response: Any) -> None:
        session = interface.open_session(app, request)
        if kind == "modified":
            session["views"] = session["views"] + 1
        elif kind == "read_only":
            session["views"]
        elif kind == "new":
            session["views"] = 1
        interface.save_session(app, session, response)

    def prepare(self, kind: str, n: int) -> None:
        """Build the next n requests' request and response objects (outside the timed region)."""
        self.pending[kind] = self.pairs(kind, n)

    def one(self, kind: str) -> None:
        request, response = self.pending[kind].pop()
        self.request(self.app, self.interface, kind, request, response)
        self.set_cookies[kind] = len(response.headers.getlist("Set-Cookie"))

    def views(self) -> int:
        return self.interface._retrieve_session_data(self.interface._get_store_id(self.sid))["views"]


def interleaved_requests(variants: Dict[str, Tuple[Any, str]], blocks: int, rounds: int) -> Dict[str, List[float]]:
    """Per variant (an object with ``prepare(kind, n)`` and ``one(kind)``, and its request kind): the trimmed
    mean seconds per request of each block, the variants taking turns request by request in an order shuffled
    every round (as end to end: a stall of the machine or of redis-server hits one request, not one variant)."""
    names = list(variants)
    calls = [variants[name] for name in names]
    samples: Dict[str, List[float]] = {name: [] for name in names}
    orders = round_orders(len(names))
    perf = time.perf_counter
    for _ in range(blocks):
        for part, kind in calls:
            part.prepare(kind, rounds)
        spent: List[List[float]] = [[] for _ in names]
        for _ in range(rounds):
            for i in next(orders):
                part, kind = calls[i]
                start = perf()
                part.one(kind)
                spent[i].append(perf() - start)
        for name, times in zip(names, spent):
            samples[name].append(trimmed_mean(times))
    return samples


# Counting round trips ########################################################################################


class RedisServer:
    """A private redis-server on a free 127.0.0.1 port, stopped by its PID."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def counting_redis(port: int) -> Tuple[Any, Dict[str, int]]:
    """A redis.Redis client whose connections count their sends: one per round trip."""
    import redis

    counter = {"sends": 0}

    class CountingConnection(redis.connection.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter["sends"] += 1
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1", port=port)
    return redis.Redis(connection_pool=pool), counter


def command_stats(client: Any) -> Dict[str, int]:
    return {k[len("cmdstat_"):]: v["calls"] for k, v in client.info("commandstats").items()}


def redis_trips(client: Any, counter: Dict[str, int], request: Callable[[str], Any], n: int,
                kinds: Tuple[str, ...] = KINDS) -> Dict[str, Any]:
    """Per request kind: round trips (the counting client's sends) and commands (the server's commandstats,
    read through ``client``, another connection) per request."""
    out = {}
    for kind in kinds:
        request(kind)  # a first request connects (and says hello) outside the count
        before = command_stats(client)
        sends = counter["sends"]
        for _ in range(n):
            request(kind)
        trips = counter["sends"] - sends
        after = command_stats(client)
        commands = {name: (after.get(name, 0) - before.get(name, 0)) / n for name in after
                    if name != "info" and after.get(name, 0) != before.get(name, 0)}
        out[kind] = {"round_trips": trips / n, "commands": commands}
    return out


@contextlib.contextmanager
def traced_sqlite(statements: List[str]) -> Iterator[None]:
    """While active, every new sqlite3 connection reports each statement it executes into ``statements``."""
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    sqlite3.connect = traced  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = connect  # type: ignore[assignment]


def sqlite_trips(path: str, n: int, kinds: Tuple[str, ...] = KINDS, **options: Any) -> Dict[str, Any]:
    statements: List[str] = []
    with traced_sqlite(statements):
        return statements_per_kind(Ours(sessions.SQLiteStore(path), **options), statements, n, kinds)


def statements_per_kind(ours: "Ours", statements: List[str], n: int, kinds: Tuple[str, ...]) -> Dict[str, Any]:
    """Per request kind: the SQL statements (and transactions) ``n`` requests of it sent, per request, as
    ``statements`` collects them, after one request to warm up."""
    out = {}
    for kind in kinds:
        ours.request(kind)
        del statements[:]
        for _ in range(n):
            ours.request(kind)
        out[kind] = {
            "statements": len(statements) / n,
            "transactions": sum(s.lstrip().upper().startswith("BEGIN") for s in statements) / n,
            "kinds": sorted({s.split()[0].upper() for s in statements}),
        }
    return out


def counting_postgres(dsn: str) -> Tuple[Callable[[], Any], List[str]]:
    """A connect callable for PostgresStore whose connections (psycopg 3, autocommit, so the store sends its
    BEGIN and COMMIT as statements) report every statement they execute: one round trip each."""
    import psycopg

    statements: List[str] = []

    class CountingCursor(psycopg.Cursor):  # type: ignore[misc]
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            statements.append(str(query))
            return super().execute(query, params, **kwargs)

    return (lambda: psycopg.connect(dsn, autocommit=True, cursor_factory=CountingCursor)), statements


def postgres_trips(dsn: str, n: int, kinds: Tuple[str, ...] = KINDS) -> Dict[str, Any]:
    connect, statements = counting_postgres(dsn)
    return statements_per_kind(Ours(sessions.PostgresStore(connect)), statements, n, kinds)


def postgres_missing() -> Optional[str]:
    """None when a throwaway PostgreSQL can run here (conftest.py's PostgresServer), else why not."""
    import glob

    if not hasattr(sessions, "PostgresStore"):
        return "n/a (sessions.PostgresStore missing)"
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb") and shutil.which("initdb") is None:
        return "n/a (PostgreSQL not installed)"
    for module in ("psycopg", "psycopg_pool"):
        try:
            __import__(module)
        except ImportError:
            return f"n/a ({module} not installed)"
    return None


def start_postgres(tmp: str) -> Any:
    """conftest.py's throwaway PostgreSQL (initdb, pg_ctl on a free port, fsync off), in a directory of its own."""
    import glob

    from conftest import PostgresServer

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    bindir = os.path.dirname(found[-1] if found else shutil.which("initdb") or "")
    workdir = tempfile.mkdtemp(prefix="bench-postgres-")
    server = PostgresServer(bindir, workdir)
    server.initdb()
    server.start()
    return server


def start_cluster(tmp: str) -> Any:
    """conftest.py's 3-primary Redis Cluster on free ports."""
    from conftest import RedisCluster

    workdir = os.path.join(tmp, "cluster")
    os.mkdir(workdir)
    cluster = RedisCluster(shutil.which("redis-server") or "redis-server", shutil.which("redis-cli") or "redis-cli",
                           workdir)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def counting_cluster(port: int) -> Tuple[Any, Dict[str, int]]:
    """A redis.RedisCluster whose node connections count their sends."""
    import redis

    counter = {"sends": 0}

    class CountingConnection(redis.connection.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter["sends"] += 1
            super().send_packed_command(command, check_health)

    return redis.RedisCluster(host="127.0.0.1", port=port, connection_class=CountingConnection), counter


def cluster_trips(client: Any, counter: Dict[str, int], request: Callable[[str], Any], n: int) -> Dict[str, Any]:
    """Per request kind: round trips (sends) per request on a cluster client, connected to every node first
    (a node's first connection sends its handshake, which is no request's)."""
    client.ping(target_nodes=client.ALL_NODES)
    out = {}
    for kind in KINDS:
        request(kind)
        sends = counter["sends"]
        for _ in range(n):
            request(kind)
        out[kind] = {"round_trips": (counter["sends"] - sends) / n}
    return out


# SQLite and PostgreSQL: 4 processes on one file / table ################################################################################


def store_worker() -> None:
    """``bench/stores.py --store-worker``: JSON {"path" (an SQLite file) or "dsn" (PostgreSQL), "kinds",
    "sessions"} on stdin; creates its sessions, prints "ready", waits for "go", cycles through them for
    "seconds", prints its counts."""
    command = json.loads(sys.stdin.readline())
    if "dsn" in command:
        import psycopg

        dsn = command["dsn"]
        store: Any = sessions.PostgresStore(lambda: psycopg.connect(dsn))  # one connection per process
    else:
        store = sessions.SQLiteStore(command["path"])
    ours = Ours(store)
    headers = []
    for _ in range(command["sessions"]):
        session = ours.manager.open(None)
        session.update(DATA)
        headers.append(cookie_header(ours.manager.name, set_cookie_value(ours.manager.commit(session)[0])))
    print("ready", flush=True)
    go = json.loads(sys.stdin.readline())
    kinds, deadline, count, i = command["kinds"], time.perf_counter() + go["seconds"], 0, 0
    while time.perf_counter() < deadline:
        for _ in range(20):
            ours.header = headers[i % len(headers)]
            ours.request(kinds[i % len(kinds)])
            i += 1
        count += 20
    stored = sum(1 for h in headers if ours.manager.open(h).is_new is False)
    print(json.dumps({"cycles": count, "sessions_found": stored, "sessions": len(headers)}), flush=True)


def store_processes(where: Dict[str, str], processes: int, kinds: List[str], seconds: float,
                    per_worker: int) -> Dict[str, Any]:
    """``processes`` workers on one store (``where``: {"path": SQLite file} or {"dsn": PostgreSQL}) at once."""
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--store-worker"], env=child_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
             for _ in range(processes)]
    try:
        for p in procs:
            p.stdin.write(json.dumps({**where, "kinds": kinds, "sessions": per_worker}) + "\n")
            p.stdin.flush()
        if not all(p.stdout.readline().strip() == "ready" for p in procs):
            raise RuntimeError("a store worker did not start")
        for p in procs:
            p.stdin.write(json.dumps({"seconds": seconds}) + "\n")
            p.stdin.flush()
        answers = [json.loads(p.stdout.readline()) for p in procs]
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
    total = sum(a["cycles"] for a in answers)
    return {"processes": processes, "kinds": kinds, "seconds": seconds, "cycles_per_s": total / seconds,
            "per_process": [a["cycles"] for a in answers],
            "all_found": all(a["sessions_found"] == a["sessions"] for a in answers)}


# The run ######################################################################################################


def run(blocks: int, rounds: int, trips_n: int, mp_seconds: float, mp_sessions: int) -> Dict[str, Any]:
    result: Dict[str, Any] = {"sqlite": None, "redis": None, "flask_session": None, "postgres": None, "cluster": None,
                              "checks": {}}
    checks = result["checks"]
    missing = [name for name in ("SQLiteStore", "RedisStore") if not hasattr(sessions, name)]
    result["missing"] = {name: f"n/a (sessions.{name} missing)" for name in missing}
    tmp = tempfile.mkdtemp(prefix="bench-stores-")
    redis_server: Optional[RedisServer] = None
    postgres: Any = None
    pool: Any = None
    cluster: Any = None
    variants: Dict[str, Tuple[Any, str]] = {}
    parts: Dict[str, Any] = {}
    try:
        if "SQLiteStore" not in missing:
            parts["sqlite"] = Ours(sessions.SQLiteStore(os.path.join(tmp, "timed.db")))
            for kind in KINDS:
                variants[f"sqlite_{kind}"] = (parts["sqlite"], kind)
        if "RedisStore" not in missing or _flask_session_available():
            if shutil.which("redis-server") is None:
                result["missing"]["redis"] = "n/a (redis-server not installed)"
            else:
                import redis

                redis_server = RedisServer()
                client = redis.Redis(host="127.0.0.1", port=redis_server.port)
                if "RedisStore" not in missing:
                    parts["redis"] = Ours(sessions.RedisStore(client, prefix="sess:"))
                    for kind in KINDS:
                        variants[f"redis_{kind}"] = (parts["redis"], kind)
                if _flask_session_available():
                    parts["flask_session"] = FlaskSessionRedis(client)
                    for kind in KINDS:
                        variants[f"flask_session_{kind}"] = (parts["flask_session"], kind)
                else:
                    result["missing"]["flask_session"] = "n/a (Flask-Session not installed: requirements-bench.txt)"
        why = postgres_missing()
        if why is None:
            from psycopg_pool import ConnectionPool

            postgres = start_postgres(tmp)
            # as README "PostgresStore" recommends: a pool, a wait bound, connections checked before use
            pool = ConnectionPool(postgres.dsn, min_size=1, max_size=4, timeout=5, open=True,
                                  check=ConnectionPool.check_connection)
            parts["postgres"] = Ours(sessions.PostgresStore(pool, create_table=True))
            for kind in KINDS:
                variants[f"postgres_{kind}"] = (parts["postgres"], kind)
        else:
            result["missing"]["postgres"] = why
        if "RedisStore" in missing or not (shutil.which("redis-server") and shutil.which("redis-cli")):
            result["missing"]["cluster"] = "n/a (redis-server and redis-cli, or sessions.RedisStore, missing)"
        else:
            import redis

            cluster = start_cluster(tmp)
            cluster_client = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
            parts["cluster"] = Ours(sessions.RedisStore(cluster_client, prefix="sess:"))
            for kind in KINDS:
                variants[f"cluster_{kind}"] = (parts["cluster"], kind)
        throttled: Dict[str, Ours] = {}  # read-only requests with touch_after, beside the other variants
        for name in ("sqlite", "redis"):
            if name in parts:
                store_ = (sessions.SQLiteStore(os.path.join(tmp, "timed.db")) if name == "sqlite"
                          else sessions.RedisStore(client, prefix="sess:"))
                throttled[name] = Ours(store_, touch_after=TOUCH_AFTER)
                variants[f"{name}_read_only_touch_after"] = (throttled[name], "read_only")
        before = {name: part.views() for name, part in parts.items()}
        warm_up = 5
        for part, kind in variants.values():  # connections, caches
            part.prepare(kind, warm_up)
            for _ in range(warm_up):
                part.one(kind)
        samples = interleaved_requests(variants, blocks, rounds) if variants else {}
        us = {name: timing.median(values) * 1e6 for name, values in samples.items()}
        for name, part in parts.items():
            result[name] = {"us": {k: us[f"{name}_{k}"] for k in KINDS}}
        for name in throttled:
            result[name]["us_read_only_touch_after"] = us[f"{name}_read_only_touch_after"]
        if "redis" in parts and "flask_session" in parts:
            mine = [sum(s) for s in zip(*(samples[f"redis_{k}"] for k in KINDS))]
            theirs = [sum(s) for s in zip(*(samples[f"flask_session_{k}"] for k in KINDS))]
            result["redis_vs_flask_session"] = {
                "mix": timing.median_ratio(mine, theirs),
                **{k: timing.median_ratio(samples[f"redis_{k}"], samples[f"flask_session_{k}"]) for k in KINDS},
            }
        # every modified request saved its change: the stored counter grew by exactly their number
        for name, part in parts.items():
            checks[f"stores_{name}_modified_saved"] = part.views() - before[name] == warm_up + blocks * rounds
            if isinstance(part, Ours):
                checks[f"stores_{name}_cookies"] = (part.cookies.get("untouched") == [] and part.cookies.get("read_only") == []
                                                    and len(part.cookies.get("modified", [])) == 1
                                                    and len(part.cookies.get("new", [])) == 1)
            else:
                # Flask-Session refreshes the cookie on every response of a permanent session
                checks[f"stores_{name}_cookies"] = all(part.set_cookies.get(k) == 1 for k in KINDS)

        # round trips, untimed, on counting clients / traced connections
        if redis_server is not None:
            counted, counter = counting_redis(redis_server.port)
            if "RedisStore" not in missing:
                ours = Ours(sessions.RedisStore(counted, prefix="sess:"))
                result["redis"]["trips"] = redis_trips(client, counter, ours.request, trips_n)
                throttled = Ours(sessions.RedisStore(counted, prefix="sess:"), touch_after=TOUCH_AFTER)
                result["redis"]["trips_touch_after"] = redis_trips(
                    client, counter, throttled.request, trips_n, kinds=("read_only",))
            if "flask_session" in parts:
                fs = FlaskSessionRedis(counted)
                app, interface = fs.app, fs.interface
                result["flask_session"]["trips"] = redis_trips(
                    client, counter, lambda kind: fs.request(app, interface, kind, *fs.pairs(kind, 1)[0]), trips_n)
        if "postgres" in parts:
            result["postgres"]["trips"] = postgres_trips(postgres.dsn, trips_n)
            result["postgres"]["processes"] = {
                "mix": store_processes({"dsn": postgres.dsn}, 4, list(KINDS), mp_seconds, mp_sessions),
                "modified": store_processes({"dsn": postgres.dsn}, 4, ["modified"], mp_seconds, mp_sessions),
            }
        if "cluster" in parts:
            counted_cluster, cluster_counter = counting_cluster(cluster.ports[0])
            ours = Ours(sessions.RedisStore(counted_cluster, prefix="sess:"))
            result["cluster"]["trips"] = cluster_trips(counted_cluster, cluster_counter, ours.request, trips_n)
        if "sqlite" in parts:
            result["sqlite"]["trips"] = sqlite_trips(os.path.join(tmp, "traced.db"), trips_n)
            result["sqlite"]["trips_touch_after"] = sqlite_trips(
                os.path.join(tmp, "traced.db"), trips_n, kinds=("read_only",), touch_after=TOUCH_AFTER)
            path = os.path.join(tmp, "shared.db")
            sessions.SQLiteStore(path)  # the schema, before the workers race to create it
            result["sqlite"]["processes"] = {
                "mix": store_processes({"path": path}, 4, list(KINDS), mp_seconds, mp_sessions),
                "modified": store_processes({"path": path}, 4, ["modified"], mp_seconds, mp_sessions),
            }
        _trip_checks(result, checks)
    finally:
        if redis_server is not None:
            redis_server.stop()
        if pool is not None:
            pool.close()
        if postgres is not None:
            postgres.stop()
            shutil.rmtree(postgres.workdir, ignore_errors=True)
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _trip_checks(result: Dict[str, Any], checks: Dict[str, bool]) -> None:
    """Each request kind took the store path its name says."""
    redis = (result.get("redis") or {}).get("trips")
    if redis:
        checks["stores_redis_untouched_no_trips"] = redis["untouched"]["round_trips"] == 0
        checks["stores_redis_read_only_touches"] = redis["read_only"]["commands"].get("expire", 0) == 1 and "set" not in redis["read_only"]["commands"]
        checks["stores_redis_modified_sets"] = redis["modified"]["commands"].get("set", 0) == 1
        checks["stores_redis_new_sets_only"] = redis["new"]["commands"] == {"set": 1.0}
        # the touch_after variant loaded the session (its round-trip count is a target, not a check)
        throttled = result["redis"]["trips_touch_after"]["read_only"]["commands"]
        checks["stores_redis_touch_after_reads"] = throttled.get("get", 0) == 1 and "set" not in throttled
    flask_session = (result.get("flask_session") or {}).get("trips")
    if flask_session:
        # it loads and rewrites the whole record on every request, read or not
        checks["stores_flask_session_writes_every_request"] = all(
            flask_session[k]["commands"].get("set", 0) == 1 for k in KINDS)
    postgres = (result.get("postgres") or {}).get("trips")
    if postgres:
        checks["stores_postgres_untouched_no_statements"] = postgres["untouched"]["statements"] == 0
        checks["stores_postgres_read_only_touches"] = ("UPDATE" in postgres["read_only"]["kinds"]
                                                       and "INSERT" not in postgres["read_only"]["kinds"])
        checks["stores_postgres_modified_updates"] = "UPDATE" in postgres["modified"]["kinds"]
        checks["stores_postgres_new_one_transaction"] = postgres["new"]["transactions"] == 1
        checks["stores_postgres_4_processes"] = all(
            p["all_found"] and len(p["per_process"]) == 4 and min(p["per_process"]) > 0
            for p in result["postgres"]["processes"].values())
    cluster = (result.get("cluster") or {}).get("trips")
    if cluster:
        checks["stores_cluster_untouched_no_trips"] = cluster["untouched"]["round_trips"] == 0
        # the record's key lives on one node: as many round trips as on one redis-server
        checks["stores_cluster_trips"] = (cluster["read_only"]["round_trips"] == 2 and cluster["modified"]["round_trips"] == 2
                                          and cluster["new"]["round_trips"] == 1)
    sqlite = (result.get("sqlite") or {}).get("trips")
    if sqlite:
        checks["stores_sqlite_untouched_no_statements"] = sqlite["untouched"]["statements"] == 0
        checks["stores_sqlite_new_one_transaction"] = sqlite["new"]["transactions"] == 1
        checks["stores_sqlite_read_only_updates"] = "UPDATE" in sqlite["read_only"]["kinds"] and "INSERT" not in sqlite["read_only"]["kinds"]
        throttled_kinds = result["sqlite"]["trips_touch_after"]["read_only"]["kinds"]
        checks["stores_sqlite_touch_after_reads"] = "SELECT" in throttled_kinds
        processes = result["sqlite"]["processes"]
        checks["stores_sqlite_4_processes"] = all(
            p["all_found"] and len(p["per_process"]) == 4 and min(p["per_process"]) > 0 for p in processes.values())


def _flask_session_available() -> bool:
    try:
        import flask_session  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__" and sys.argv[1:] == ["--store-worker"]:
    store_worker()
