"""Nothing acknowledged is ever lost: soak tests under the servers people deploy with (issue 20).

Each scenario serves the soak site (fixtures/soak/: a WSGI app and a Flask app under gunicorn with 4 sync
workers, a FastAPI app under ``uvicorn --workers 2``) on a real store (SQLiteStore, one file; RedisStore on
a real redis-server writing an append-only file with ``appendfsync always``; PostgresStore on a PostgreSQL
of its own), and sends it virtual users: each has its own cookie jar and logs in, writes keys of its own,
reads back every key acknowledged, logs out and logs in again, keeping a ledger of every answer. Meanwhile
a worker is SIGKILLed every few seconds (the server starts another), and the store has its fault once:
redis-server is SIGKILLed and started again on the same port and file, PostgreSQL is crashed and started
again (``pg_ctl stop -m immediate``, then ``start``: ``restart -m immediate`` in two steps), or an SQLite
worker is SIGKILLed inside its write transaction.

The verdict, per scenario: one line ``soak <server>/<store>: ...`` (shown with ``-s``), then the figures
behind it; asserted: no acknowledged write lost, no session back after its acknowledged logout, no 2xx
with data its user did not write, no 5xx whose write was stored, no write killed before its commit stored,
every request answered while the store was down (workers are not killed then), and worker memory growth
within ``RSS_GROWTH_BOUND_MIB``. Connection errors while a worker dies are allowed: they acknowledge nothing.

Profiles: each scenario runs ``$SOAK_SECONDS`` (default 6) seconds, or ``--soak-minutes N``; the long run
is ``SOAK_SECONDS=600 python3 -m pytest test_soak.py -s``. ``$SOAK_USERS`` sets the number of users (50).
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest

import sessions
from conftest import (PostgresServer, RedisServer, free_port, missing, postgres_bin, record_of, require_binary,
                      sid_of, stop_process)

HERE = os.path.dirname(os.path.abspath(__file__))
SITE = os.path.join(HERE, "fixtures", "soak")

DEFAULT_SECONDS = 6.0
USERS = int(os.environ.get("SOAK_USERS", "50"))
THINK_SECONDS = (0.3, 1.0)  # a user's pause between two requests: 50 users make about 75 requests a second
KILL_EVERY_SECONDS = 2.0  # a worker is SIGKILLed this often (never the oldest: its memory is watched)
BUSY_WAIT_SECONDS = 0.5  # how long a kill waits for a worker caught in the middle of a request
OUTAGE_SECONDS = 1.5  # how long redis-server stays dead
HOLD_SECONDS = 30.0  # how long a held write would keep its SQLite transaction open (it is killed first)
RSS_WARMUP_SECONDS = 2.0  # a worker's memory baseline is taken this long after it is first seen
RSS_GROWTH_BOUND_MIB = 32.0  # the most a worker's RSS may grow after its baseline
REQUEST_TIMEOUT = 20.0
START_TIMEOUT = 30.0
SECRET = "soak secret"


def soak_seconds(config: pytest.Config) -> float:
    minutes = config.getoption("--soak-minutes")
    if minutes is not None:
        return minutes * 60
    return float(os.environ.get("SOAK_SECONDS", DEFAULT_SECONDS))


# Processes ################################################################################################


def stat_fields(pid: int) -> List[str]:
    """The fields of /proc/<pid>/stat after the command name (state first), or none if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def children_of(pid: int) -> List[int]:
    """The PIDs whose parent is ``pid``."""
    parent = str(pid)
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and stat_fields(int(entry))[1:2] == [parent]]


def started_at(pid: int) -> int:
    """When the process started, in clock ticks since boot (0 if it is gone)."""
    stat = stat_fields(pid)
    return int(stat[19]) if stat else 0


def running(pid: int) -> bool:
    """On a CPU now: a worker doing a request (an idle one sleeps in accept or its event loop)."""
    return stat_fields(pid)[:1] == ["R"]


def rss_kib(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def is_worker(pid: int) -> bool:
    """A child of the server that serves requests (not multiprocessing's resource tracker)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"resource_tracker" not in cmdline.read()
    except OSError:
        return False


@dataclass(frozen=True)
class Server:
    """A server as deployed: its command for a port (run in fixtures/soak/) and its number of workers."""

    name: str
    module: str  # the server's Python package
    command: Callable[[int], List[str]]
    workers: int


def gunicorn(app: str) -> Callable[[int], List[str]]:
    return lambda port: [
        sys.executable, "-m", "gunicorn", "--workers", "4", "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}", "--timeout", "60", "--graceful-timeout", "3", app,
    ]


def uvicorn_workers(port: int) -> List[str]:
    return [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--workers", "2", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "3"]


SERVERS = [
    Server("gunicorn-wsgi", "gunicorn", gunicorn("wsgi_app:app"), 4),
    Server("gunicorn-flask", "gunicorn", gunicorn("flask_app:app"), 4),
    Server("uvicorn-fastapi", "uvicorn", uvicorn_workers, 2),
]


class Served:
    """A running server: its master in a process group of its own (its workers with it), its output in
    ``log``; ``stop()`` stops the master by its PID, then SIGKILLs whatever is left of its group."""

    def __init__(self, server: Server, environment: Dict[str, str], log_path: str) -> None:
        self.server = server
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, **environment, "SOAK_SECRET": SECRET,
               "PYTHONPATH": os.pathsep.join([HERE, SITE])}
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(server.command(self.port), cwd=SITE, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def workers(self) -> List[int]:
        """The live workers, oldest first."""
        pids = [pid for pid in children_of(self.process.pid) if is_worker(pid)]
        return sorted(pids, key=lambda pid: (started_at(pid), pid))

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            if len(self.workers()) == self.server.workers and answers(self.base + "/read"):
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"{self.server.name} did not start:\n{self.log()}")

    def stop(self) -> None:
        stop_process(self.process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # a worker the master left behind

    def log(self) -> str:
        with open(self.log_path, "rb") as log:
            return log.read()[-4000:].decode(errors="replace")


def answers(url: str) -> bool:
    try:
        with PLAIN.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, http.client.HTTPException):
        return False


PLAIN = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, whatever the proxies


# Stores ###################################################################################################


class KillableRedisServer(RedisServer):
    """redis-server (without persistence) that ``kill()`` SIGKILLs; ``start()`` starts it again."""

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(10)


class DurableRedisServer(KillableRedisServer):
    """redis-server writing every write to its append-only file before answering it: ``start()`` after a
    ``kill()`` loads the file again, on the same port."""

    def __init__(self, binary: str, workdir: str) -> None:  # the later options win over RedisServer's
        super().__init__(binary, workdir, extra=["--appendonly", "yes", "--appendfsync", "always"])


@dataclass
class Fault:
    """What a store's fault did: the outage window (monotonic seconds) when requests must still be
    answered, and a write killed inside its transaction (its user and key), which must never be stored."""

    restarts: int = 0
    kills: int = 0
    outage: Optional[Tuple[float, float]] = None
    killed_write: Optional[Tuple["VirtualUser", str]] = None


class SQLiteBackend:
    """SQLiteStore in one file; its fault: a worker SIGKILLed inside its write transaction."""

    name = "sqlite"

    def __init__(self, workdir: str) -> None:
        self.path = os.path.join(workdir, "sessions.db")
        self.hold_file = os.path.join(workdir, "held-by")
        sessions.SQLiteStore(self.path)  # the schema exists before the workers start

    def environment(self) -> Dict[str, str]:
        return {"SOAK_STORE": "sqlite:" + self.path, "SOAK_HOLD_FILE": self.hold_file}

    def checker(self) -> sessions.Store:
        return sessions.SQLiteStore(self.path)

    def fault(self, soak: "Soak") -> Fault:
        holder = soak.new_user("holder")
        for _ in range(20):  # bounded: a logged-in holder with one acknowledged write
            if holder.logged_in and holder.acknowledged_keys():
                break
            holder.step()
        assert holder.logged_in and holder.acknowledged_keys(), "the holder could not log in and write"
        key = holder.next_key()
        held = threading.Thread(target=holder.write, args=(key,), kwargs={"hold": HOLD_SECONDS})
        held.start()
        pid = wait_for_pid(self.hold_file, REQUEST_TIMEOUT)
        assert pid is not None, "the held write never reached its SQLite transaction"
        os.kill(pid, signal.SIGKILL)
        os.remove(self.hold_file)
        held.join(REQUEST_TIMEOUT + 5)
        holder.read()
        return Fault(kills=1, killed_write=(holder, key))

    def close(self) -> None:
        pass


class RedisBackend:
    """RedisStore on a redis-server with ``appendfsync always``; its fault: the server SIGKILLed, and
    started again on the same port and append-only file ``OUTAGE_SECONDS`` later."""

    name = "redis"

    def __init__(self, workdir: str, server_class: type = DurableRedisServer) -> None:
        if importlib.util.find_spec("redis") is None:
            missing("redis-py is not installed (pip install -r requirements-dev.txt)")
        import redis

        self.server = server_class(require_binary("redis-server"), workdir)
        self.server.start()
        self.client = redis.Redis.from_url(self.server.url, socket_timeout=5, socket_connect_timeout=5)

    def environment(self) -> Dict[str, str]:
        return {"SOAK_STORE": self.server.url}

    def checker(self) -> sessions.Store:
        return sessions.RedisStore(self.client)

    def fault(self, soak: "Soak") -> Fault:
        began = time.monotonic()
        self.server.kill()  # returns once the process is gone
        soak.store_died_at = time.monotonic()  # a request sent before may have been applied, its answer lost
        time.sleep(OUTAGE_SECONDS)
        self.server.start()
        return Fault(restarts=1, outage=(began, time.monotonic()))

    def close(self) -> None:
        self.client.close()
        self.server.stop()


class CrashablePostgresServer(PostgresServer):
    """conftest's throwaway PostgreSQL, with ``crash()``: ``pg_ctl stop -m immediate``, every server process
    ended at once, without a checkpoint; ``start()`` then starts it again (crash recovery) on the same port
    with the same options. The two are what ``pg_ctl restart -m immediate`` does, with the moment between
    them (every server process gone) visible to the soak."""

    def crash(self) -> None:
        """Returns once the postmaster has exited, after its backends (it waits for them)."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "30", "stop")


class PostgresBackend:
    """PostgresStore (on a psycopg_pool pool in each worker) on a PostgreSQL of its own, whose sessions
    commit with ``synchronous_commit = on`` (PostgreSQL's default; conftest's server runs with it off, for
    speed); its fault: ``pg_ctl stop -m immediate``, then ``start`` (``restart -m immediate``)."""

    name = "postgres"

    def __init__(self, workdir: str) -> None:
        for module in ("psycopg", "psycopg_pool"):
            if importlib.util.find_spec(module) is None:
                missing(f"{module} is not installed (pip install -r requirements-dev.txt)")
        import psycopg

        bindir = postgres_bin()
        self.workdir = tempfile.mkdtemp(prefix="sessions-soak-postgres-")  # one the postgres user can enter
        self.server = CrashablePostgresServer(bindir, self.workdir)
        self.server.initdb()
        self.server.start()
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            conn.execute("ALTER DATABASE postgres SET synchronous_commit = on")  # over the server's option
        with psycopg.connect(self.server.dsn) as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        len(self.checker(create_table=True))  # the table exists before the workers start

    def environment(self) -> Dict[str, str]:
        return {"SOAK_STORE": self.server.url + "?connect_timeout=2"}

    def checker(self, create_table: bool = False) -> sessions.Store:
        import psycopg

        return sessions.PostgresStore(lambda: psycopg.connect(self.server.dsn), create_table=create_table)

    def fault(self, soak: "Soak") -> Fault:
        began = time.monotonic()
        self.server.crash()
        # A request sent before every server process was gone may have committed and lost its answer (pg_ctl
        # takes a moment to end them): its 5xx is counted as in flight at the store's death, as for Redis.
        soak.store_died_at = time.monotonic()
        self.server.start()
        return Fault(restarts=1, outage=(began, time.monotonic()))

    def close(self) -> None:
        try:
            self.server.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


STORES = {"sqlite": SQLiteBackend, "redis": RedisBackend, "postgres": PostgresBackend}
SCENARIOS = [(server, store) for server in SERVERS for store in STORES]


def wait_for_pid(path: str, timeout: float) -> Optional[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            with open(path) as written:
                return int(written.read())
        time.sleep(0.01)
    return None


# Virtual users ############################################################################################


@dataclass
class Figures:
    """What the users saw, and what went wrong (``lost`` to ``uncommitted_seen`` must stay 0)."""

    requests: int = 0
    answered: int = 0
    connection_errors: int = 0
    server_errors: int = 0
    acknowledged: int = 0  # 2xx answers to a login or a write: each stored a key
    logouts: int = 0
    lost: int = 0  # acknowledged keys missing from their session afterwards
    resurrected: int = 0  # data of a session seen again after its acknowledged logout
    wrong: int = 0  # a 2xx with data its user did not write
    changed_by_5xx: int = 0  # a write answered 5xx that was stored all the same
    unanswered_in_outage: int = 0  # connection errors while the store was down (no worker was killed)
    uncommitted_seen: int = 0  # a write killed inside its transaction, stored all the same
    in_flight_at_store_death: int = 0  # 5xx to a write or logout sent before the store died: outcome unknown

    def add(self, other: "Figures") -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Write:
    value: str
    session: int  # the number of the user's session it was sent in
    #: "acknowledged" (2xx), "failed" (5xx), "refused" (4xx), "unknown" (a connection error, or a 5xx sent
    #: before the store died), or "killed" (its worker was killed inside its transaction, before the commit)
    outcome: str


@dataclass
class VirtualUser:
    """One browser: its own cookie jar, a ledger of every write it sent and what the answer was, and the
    figures of what it saw. Sequential, like a person: one request at a time."""

    base: str
    name: str
    rng: random.Random
    figures: Figures = field(default_factory=Figures)
    writes: Dict[str, Write] = field(default_factory=dict)
    session: int = 0  # the number of the current session (one more per acknowledged login)
    logged_in: bool = False
    writes_left: int = 0
    read_due: bool = False
    logout_failed: bool = False  # the last logout was answered 5xx: its destroy may have run all the same
    ended: List[str] = field(default_factory=list)  # cookies of sessions whose logout was acknowledged
    store_died_at: Callable[[], Optional[float]] = lambda: None  # when the store server was killed
    errors_at: List[float] = field(default_factory=list)  # monotonic times of connection errors
    flagged: Set[Tuple[str, str]] = field(default_factory=set)
    sequence: int = 0

    def __post_init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                  urllib.request.HTTPCookieProcessor(self.jar))

    # what one user does -----------------------------------------------------------------------------------

    def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.step()
            time.sleep(self.rng.uniform(*THINK_SECONDS))

    def step(self) -> None:
        """Log in; write a few keys, reading the session back after each; log out; again."""
        if not self.logged_in:
            self.login()
        elif self.read_due:
            self.read()
        elif self.writes_left:
            self.write(self.next_key())
        else:
            self.logout()

    def login(self) -> None:
        reply = self.call("POST", "login", {"user": self.name})
        if reply is not None and reply[0] == 200:
            self.session += 1
            self.logged_in, self.writes_left, self.logout_failed = True, self.rng.randint(2, 5), False
            self.figures.acknowledged += 1
            if self.cookie() is None:
                self.flag("wrong", "login without a cookie")

    def next_key(self) -> str:
        self.sequence += 1
        return f"k{self.sequence}"

    def write(self, key: str, hold: float = 0.0) -> None:
        value = f"{self.name}/{key}"
        headers = {"X-Soak-Hold": str(hold)} if hold else {}
        sent = time.monotonic()
        reply = self.call("POST", "write", {"user": self.name, "key": key, "value": value}, headers)
        status = None if reply is None else reply[0]
        unknown = status is not None and status >= 500 and self.sent_before_store_died(sent)
        self.writes[key] = Write(value, self.session, "unknown" if unknown else outcome_of(status))
        self.writes_left, self.read_due = max(0, self.writes_left - 1), True
        if status == 200:
            self.figures.acknowledged += 1
        elif status == 401:  # the server found no session of this user to write into
            self.session_gone()

    def read(self) -> None:
        reply = self.call("GET", "read")
        if reply is not None and reply[0] == 200:
            self.read_due = False
            self.judge(reply[1])

    def logout(self) -> None:
        cookie = self.cookie()
        sent = time.monotonic()
        reply = self.call("POST", "logout")
        if reply is None or (reply[0] >= 500 and self.sent_before_store_died(sent)):
            # it may or may not have run: start over, and judge that session no more
            self.logged_in = False
            self.jar.clear()
        elif reply[0] == 200:
            self.logged_in = False
            self.figures.logouts += 1
            if cookie is not None:
                self.ended.append(cookie)
                self.probe(cookie)
        elif reply[0] >= 500:
            self.logout_failed = True

    def sent_before_store_died(self, sent: float) -> bool:
        """A 5xx to a request sent before the store was killed: the store may have applied the command and
        died before answering it, so the app could not know (counted apart, as a connection error is)."""
        died = self.store_died_at()
        if died is not None and sent <= died:
            self.figures.in_flight_at_store_death += 1
            return True
        return False

    def probe(self, cookie: str) -> None:
        """The cookie of a session logged out, sent again (a stale tab, a thief): it must find nothing."""
        reply = self.call("GET", "read", cookie=cookie)
        if reply is not None and reply[0] == 200 and reply[1]:
            self.flag("resurrected" if reply[1].get("user") == self.name else "wrong", cookie)

    # the ledger -------------------------------------------------------------------------------------------

    def judge(self, data: Any) -> None:
        """Check a 2xx read (or the stored record at the end) against the ledger of the current session."""
        if not isinstance(data, dict):
            self.flag("wrong", repr(data)[:50])
            return
        if data.get("user") != self.name:
            if data.get("user") is not None:
                self.flag("wrong", f"user {data.get('user')}")
            self.session_gone()
            return
        for key, value in data.items():
            if key == "user":
                continue
            write = self.writes.get(key)
            if write is None or write.value != value:
                self.flag("wrong", key)
            elif write.session != self.session:
                self.flag("resurrected", key)
            elif write.outcome == "failed":
                self.flag("changed_by_5xx", key)
            elif write.outcome == "killed":
                self.flag("uncommitted_seen", key)
        for key in self.acknowledged_keys():
            if key not in data:
                self.flag("lost", f"{self.session}:{key}")

    def acknowledged_keys(self) -> List[str]:
        return [key for key, write in self.writes.items()
                if write.session == self.session and write.outcome == "acknowledged"]

    def session_gone(self) -> None:
        """The current session is not there: its acknowledged login and writes are lost (unless a logout
        answered 5xx ran all the same: a 5xx that changed data). Log in again."""
        if self.logout_failed:
            self.flag("changed_by_5xx", f"logout of session {self.session}")
        else:
            for key in ["user", *self.acknowledged_keys()]:
                self.flag("lost", f"{self.session}:{key}")
        self.logged_in = False
        self.jar.clear()

    def flag(self, figure: str, what: str) -> None:
        """Count a finding once, however many reads see it again."""
        if (figure, what) not in self.flagged:
            self.flagged.add((figure, what))
            setattr(self.figures, figure, getattr(self.figures, figure) + 1)

    def check_store(self, store: sessions.Store) -> None:
        """After the run, in the store itself: the current session holds every acknowledged write, and
        no session logged out is there."""
        cookie = self.cookie()
        if self.logged_in and cookie is not None:  # (a login without a cookie was flagged wrong)
            record = record_of(store, sid_of(cookie))
            if record is None:
                self.session_gone()
            else:
                data = json.loads(record)
                del data["cookie"]
                self.judge(data)
        for cookie in self.ended:
            if record_of(store, sid_of(cookie)) is not None:
                self.flag("resurrected", cookie)

    # HTTP -------------------------------------------------------------------------------------------------

    def cookie(self) -> Optional[str]:
        values = [c.value for c in self.jar if c.name == "sid"]
        return values[0] if values else None

    def call(self, method: str, action: str, params: Optional[Dict[str, str]] = None,
             headers: Optional[Dict[str, str]] = None, cookie: Optional[str] = None) -> Optional[Tuple[int, Any]]:
        """(status, JSON body or None) of one request, or None for a connection error. With ``cookie``,
        that cookie alone is sent, outside the jar."""
        self.figures.requests += 1
        url = f"{self.base}/{action}?{urllib.parse.urlencode(params or {})}"
        headers = dict(headers or {})
        if cookie is not None:
            headers["Cookie"] = f"sid={cookie}"
        request = urllib.request.Request(url, data=b"" if method == "POST" else None, headers=headers,
                                         method=method)
        opener = self.opener if cookie is None else PLAIN
        try:
            try:
                with opener.open(request, timeout=REQUEST_TIMEOUT) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as error:
                with error:
                    status, body = error.code, error.read()
        except (OSError, http.client.HTTPException):
            self.figures.connection_errors += 1
            self.errors_at.append(time.monotonic())
            return None
        self.figures.answered += 1
        if status >= 500:
            self.figures.server_errors += 1
        try:
            return status, json.loads(body)
        except ValueError:  # the server's own 500 page
            return status, None


def outcome_of(status: Optional[int]) -> str:
    if status is None:
        return "unknown"
    if 200 <= status < 300:
        return "acknowledged"
    return "failed" if status >= 500 else "refused"


# The soak #################################################################################################


class MemoryWatch:
    """Each worker's RSS, sampled: a baseline ``RSS_WARMUP_SECONDS`` after it was first seen, and the last."""

    def __init__(self) -> None:
        self.first_seen: Dict[int, float] = {}
        self.baseline: Dict[int, int] = {}
        self.last: Dict[int, int] = {}

    def sample(self, pids: List[int]) -> None:
        now = time.monotonic()
        for pid in pids:
            rss = rss_kib(pid)
            if rss is None:
                continue
            if now - self.first_seen.setdefault(pid, now) >= RSS_WARMUP_SECONDS:
                self.baseline.setdefault(pid, rss)
            self.last[pid] = rss

    def growth_mib(self) -> float:
        """The most any worker grew after its baseline (MiB)."""
        return max((self.last[pid] - base for pid, base in self.baseline.items()), default=0) / 1024

    def longest_watched_seconds(self) -> float:
        return max((time.monotonic() - self.first_seen[pid] for pid in self.baseline), default=0.0)


class Soak:
    """One scenario's run: the users, the worker kills, the store's fault, and the figures."""

    def __init__(self, served: Served, backend: Any, seconds: float) -> None:
        self.served, self.backend, self.seconds = served, backend, seconds
        self.users: List[VirtualUser] = []
        self.kills = 0
        self.fault = Fault()
        self.store_died_at: Optional[float] = None  # set by a backend's fault just before it kills its server
        self.memory = MemoryWatch()
        self.rng = random.Random(20)

    def new_user(self, name: str) -> VirtualUser:
        user = VirtualUser(self.served.base, name, random.Random(f"{name}/{len(self.users)}"),
                           store_died_at=lambda: self.store_died_at)
        self.users.append(user)
        return user

    def run(self) -> None:
        start = time.monotonic()
        deadline = start + self.seconds
        threads = [threading.Thread(target=self.new_user(f"u{n}").run, args=(deadline,), daemon=True)
                   for n in range(USERS)]
        for thread in threads:
            thread.start()
        self.chaos(start, deadline)
        for thread in threads:
            thread.join(REQUEST_TIMEOUT + THINK_SECONDS[1] + 5)
        assert not any(thread.is_alive() for thread in threads), "a user did not finish"

    def chaos(self, start: float, deadline: float) -> None:
        """Until the deadline: sample worker memory every second, SIGKILL a worker (never the oldest) every
        ``KILL_EVERY_SECONDS``, and have the store's fault once, halfway (no worker is killed during it)."""
        next_kill, next_sample, fault_at = start + KILL_EVERY_SECONDS / 2, start, start + self.seconds / 2
        faulted = False
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_sample:
                self.memory.sample(self.served.workers())
                next_sample = now + 1.0
            if not faulted and now >= fault_at:
                self.fault = self.backend.fault(self)
                faulted = True
                next_kill = time.monotonic() + KILL_EVERY_SECONDS
            elif now >= next_kill and (faulted or now < fault_at - 1):  # no kill's errors in the outage
                self.kill_a_worker()
                next_kill = now + KILL_EVERY_SECONDS
            time.sleep(0.05)
        assert faulted, "the run ended before the store's fault"

    def kill_a_worker(self) -> None:
        """SIGKILL a worker, preferably one caught running (within ``BUSY_WAIT_SECONDS``), so the kill more
        often lands in the middle of a request; the oldest lives on: its memory over the run is measured."""
        workers = self.served.workers()[1:]
        if not workers:
            return
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        busy = [pid for pid in workers if running(pid)]
        while not busy and time.monotonic() < deadline:
            time.sleep(0.001)
            busy = [pid for pid in workers if running(pid)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.rng.choice(busy or workers), signal.SIGKILL)
            self.kills += 1

    def figures(self) -> Figures:
        total = Figures()
        for user in self.users:
            total.add(user.figures)
        if self.fault.outage is not None:
            began, ended = self.fault.outage
            total.unanswered_in_outage = sum(began <= at <= ended for user in self.users for at in user.errors_at)
        return total

    def check_store(self) -> None:
        store = self.backend.checker()
        for user in self.users:
            user.check_store(store)
        if self.fault.killed_write is not None:
            holder, key = self.fault.killed_write
            holder.writes[key].outcome = "killed"  # before its COMMIT: it must not be there
            holder.check_store(store)


@contextlib.contextmanager
def serving(server: Server, backend: Any, workdir: str) -> Iterator[Served]:
    """``server`` serving the soak site on ``backend``'s store; the server stopped and the backend closed
    afterwards, whatever happens."""
    if importlib.util.find_spec(server.module) is None:
        missing(f"{server.module} is not installed (pip install -r requirements-dev.txt)")
    try:
        served = Served(server, backend.environment(), os.path.join(workdir, "server.log"))
        try:
            served.wait_until_serving()
            yield served
        finally:
            served.stop()
    finally:
        backend.close()


def soak(served: Served, backend: Any, seconds: float) -> Tuple[Soak, Figures]:
    """Run the soak, stop the server (nothing in flight), check the store, and print the verdict."""
    run = Soak(served, backend, seconds)
    run.run()
    served.stop()
    run.check_store()
    figures = run.figures()
    kills, restarts = run.kills + run.fault.kills, run.fault.restarts
    print(f"\nsoak {served.server.name}/{backend.name}: {figures.requests} requests, {kills} kills, "
          f"{restarts} restarts, {figures.acknowledged} acknowledged writes, {figures.lost} lost, "
          f"{figures.resurrected} resurrected, {figures.wrong} wrong")
    print(f"  {figures.answered} answered, {figures.connection_errors} connection errors, "
          f"{figures.server_errors} 5xx ({figures.changed_by_5xx} that changed data), {figures.logouts} logouts, "
          f"{figures.unanswered_in_outage} unanswered while the store was down, {figures.uncommitted_seen} "
          f"killed writes stored, {figures.in_flight_at_store_death} 5xx sent before the store died; worker "
          f"RSS growth {run.memory.growth_mib():.1f} MiB at most (bound {RSS_GROWTH_BOUND_MIB:.0f}), over "
          f"{run.memory.longest_watched_seconds():.0f} s")
    return run, figures


@pytest.mark.parametrize("server, store", SCENARIOS, ids=[f"{server.name}/{store}" for server, store in SCENARIOS])
def test_nothing_acknowledged_is_lost_under_worker_kills_and_store_faults(server, store, tmp_path, request):
    backend = STORES[store](str(tmp_path))
    with serving(server, backend, str(tmp_path)) as served:
        run, figures = soak(served, backend, soak_seconds(request.config))
        assert (figures.lost, figures.resurrected, figures.wrong) == (0, 0, 0), served.log()
        assert (figures.changed_by_5xx, figures.uncommitted_seen, figures.unanswered_in_outage) == (0, 0, 0)
        assert run.memory.growth_mib() <= RSS_GROWTH_BOUND_MIB
        assert run.kills > 0 and figures.acknowledged > 0 and figures.logouts > 0


def test_the_verdict_sees_what_a_redis_without_persistence_loses(tmp_path):
    """The verdict has teeth: the same soak on a Redis that keeps nothing across its restart counts the
    acknowledged logins and writes the restart took."""
    backend = RedisBackend(str(tmp_path), KillableRedisServer)
    with serving(SERVERS[0], backend, str(tmp_path)) as served:
        _, figures = soak(served, backend, DEFAULT_SECONDS)
    assert figures.lost > 0
    assert (figures.resurrected, figures.wrong) == (0, 0)


# The ledger's judgement, without a server ##################################################################


def ledger() -> VirtualUser:
    """A user in its second session, having written k1 (first session, acknowledged), then k2
    (acknowledged), k3 (answered 5xx) and k4 (connection error) in this one."""
    user = VirtualUser("http://127.0.0.1:9", "u1", random.Random(0), session=2, logged_in=True)
    user.writes = {"k1": Write("u1/k1", 1, "acknowledged"), "k2": Write("u1/k2", 2, "acknowledged"),
                   "k3": Write("u1/k3", 2, "failed"), "k4": Write("u1/k4", 2, "unknown")}
    return user


@pytest.mark.parametrize("data, figures", [
    ({"user": "u1", "k2": "u1/k2"}, ""),
    ({"user": "u1", "k2": "u1/k2", "k4": "u1/k4"}, ""),  # a write of unknown outcome may be there
    ({"user": "u1"}, "lost"),
    ({}, "lost"),  # the whole session gone
    ({"user": "u1", "k2": "u1/k2", "k1": "u1/k1"}, "resurrected"),
    ({"user": "u1", "k2": "u1/k2", "k3": "u1/k3"}, "changed_by_5xx"),
    ({"user": "u2", "k2": "u1/k2"}, "wrong lost"),  # another user's session, and this user's is gone
    ({"user": "u1", "k2": "u2/k2"}, "wrong"),
    ({"user": "u1", "k2": "u1/k2", "x": "u1/x"}, "wrong"),
    (["not", "a", "session"], "wrong"),
])
def test_the_ledger_judges_a_read(data, figures):
    user = ledger()
    user.judge(data)
    user.judge(data)  # a finding counts once, however many reads see it
    found = {name: value for name, value in vars(user.figures).items() if value}
    assert sorted(found) == sorted(figures.split())
    assert set(found.values()) <= {1, 2}  # 2: the lost session's login and k2
