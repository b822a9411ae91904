"""Helpers every test file shares: an injectable clock, the session id inside a cookie, and a store that
records the manager's calls. Import the classes and functions (``from conftest import Clock, ...``) or use
the fixtures ``clock`` and ``store``; a test module may override either fixture."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any, Iterator, List, Optional, Sequence, Set, Tuple, Union
from urllib.parse import unquote

import pytest

import sessions

T0 = 1700000000.0  # 2023-11-14T22:13:20.000Z, the reference's frozen Date.now()


class Clock:
    """A settable clock in seconds since the epoch (``T0`` unless told otherwise)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    @classmethod
    def near_real_time(cls) -> "Clock":
        """Starts at the real time (whole seconds), for tests whose HTTP client judges cookie expiry by it."""
        return cls(float(int(time.time())))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sid_of(cookie: str, secret: Union[str, bytes, None] = None) -> str:
    """The session id in a Set-Cookie value, a ``name=value`` pair or a bare cookie value
    (``s%3A<id>.<mac>``). With ``secret``, the signature must verify with it."""
    value = cookie.split(";", 1)[0].strip()
    if "=" in value:
        value = value.split("=", 1)[1]
    value = unquote(value)
    assert value.startswith("s:"), value
    if secret is None:
        return value[2:].rsplit(".", 1)[0]
    sid = sessions.unsign(value[2:], secret)
    assert sid is not None, "the cookie's signature does not verify"
    return sid


def record_of(store: sessions.Store, sid: str) -> Optional[str]:
    """The record text ``store.get`` returns, whichever form it uses (text or ``(text, expires_at)``)."""
    got = store.get(sid)
    return got[0] if isinstance(got, tuple) else got


class RecordingStore(sessions.Store):
    """Wraps a store (a ``MemoryStore`` by default) and records each call the manager makes as
    ``(method, sid)``; the methods named in ``fail`` raise instead. The inner store's own calls (its touch
    doing a set) are not recorded. Other attributes (``expiry``, ``prune``, ...) are the inner store's."""

    def __init__(self, inner: Optional[sessions.Store] = None, *, clock: Any = None) -> None:
        self.inner = inner if inner is not None else sessions.MemoryStore(clock=clock or time.time)
        self.calls: List[Tuple[str, str]] = []
        self.fail: Set[str] = set()
        self.blocking = getattr(self.inner, "blocking", True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _record(self, method: str, sid: str) -> None:
        self.calls.append((method, sid))
        if method in self.fail:
            raise RuntimeError(f"store {method} is down")

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def reset(self) -> None:
        self.calls.clear()

    def data(self, sid: str) -> Optional[dict]:
        """The stored data of ``sid`` (without the cookie object), read without recording; None if missing."""
        record = record_of(self.inner, sid)
        if record is None:
            return None
        parsed = json.loads(record)
        del parsed["cookie"]
        return parsed

    def get(self, sid):
        self._record("get", sid)
        return self.inner.get(sid)

    def set(self, sid, record, expires):
        self._record("set", sid)
        self.inner.set(sid, record, expires)

    def touch(self, sid, record, expires):
        self._record("touch", sid)
        self.inner.touch(sid, record, expires)

    def destroy(self, sid):
        self._record("destroy", sid)
        self.inner.destroy(sid)

    def clear(self):
        self.inner.clear()

    def __len__(self):
        return len(self.inner)

    def ids(self):
        return self.inner.ids()


class LaxStore(sessions.Store):
    """The least a third-party store writes: get, set and destroy on a dict, nothing ever expiring (so the
    manager must check a record's ``expires`` itself) and Store's defaults for touch and update."""

    def __init__(self) -> None:
        self.records: dict = {}

    def get(self, sid):
        return self.records.get(sid)

    def set(self, sid, record, expires):
        self.records[sid] = record

    def destroy(self, sid):
        self.records.pop(sid, None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> RecordingStore:
    return RecordingStore(clock=clock)


# Other branches: add shared fixtures below, each in a block delimited by `# --- <branch> fixtures ---`
# comments, so that merging the branches is a concatenation.


# --- stores fixtures ---


def free_port(consecutive: int = 1) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago; with ``consecutive``, the first of that many
    free ports in a row (the demo's ``--with-express`` takes the next one)."""
    for _ in range(100):
        with contextlib.ExitStack() as held:
            first = held.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                for offset in range(1, consecutive):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no {consecutive} free ports in a row on 127.0.0.1")


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process by its PID (SIGTERM, then SIGKILL after a bounded wait), then close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):  # BrokenPipeError: unread input left for a process that is gone
                pipe.close()


def missing(message: str) -> None:
    """A real part a test needs is not here: under CI (which installs every one) the test fails; on a
    laptop it skips, saying what to install."""
    if os.environ.get("CI"):
        pytest.fail(message + " (required under CI)")
    pytest.skip(message)


def require_binary(name: str) -> str:
    """The path of ``name``, or ``missing`` when it is not installed."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed")
    return path


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class _Restartable:
    """A test server with ``start()`` and ``stop()``; ``stopped()`` is an outage of it."""

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stop the server for the block, and start it again on the same port afterwards, whatever happens."""
        self.stop()
        try:
            yield
        finally:
            self.start()


class RedisServer(_Restartable):
    """A real ``redis-server`` on 127.0.0.1, without persistence, stopped by its PID.

    ``port`` and ``url`` stay the same across ``stop()`` / ``start()``, so clients made from ``url``
    reconnect once the server is back (the outage tests rely on it).
    """

    STARTUP_SECONDS = 10.0

    def __init__(self, binary: str, workdir: str, port: Optional[int] = None, extra: Sequence[str] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port() if port is None else port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = list(extra)  # more redis-server options (a cluster node's)
        self.process: Optional[subprocess.Popen] = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server on ``port`` and wait (bounded) until it answers PING."""
        if self.running:
            return
        log = open(os.path.join(self.workdir, "redis.log"), "ab")
        with log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.workdir, *self.extra],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        with open(os.path.join(self.workdir, "redis.log"), "rb") as output:
            tail = output.read()[-2000:].decode(errors="replace")
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL after a bounded wait)."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout=5)

    def flushall(self) -> None:
        """Delete every key (a test's clean slate), without needing a client library."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            if not conn.recv(16).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the test session: ``.port``, ``.url``, ``.stop()``, ``.start()``,
    ``.stopped()`` (a context manager for outages), ``.flushall()``."""
    server = RedisServer(require_binary("redis-server"), str(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- end stores fixtures ---


# --- postgres fixtures ---


def postgres_bin() -> str:
    """The directory of PostgreSQL's server programs (Debian keeps them off PATH, in
    /usr/lib/postgresql/<version>/bin; the newest wins), or ``missing``."""
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        missing("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return os.path.dirname(initdb)


class PostgresServer(_Restartable):
    """A throwaway PostgreSQL server on 127.0.0.1 (a fresh ``initdb``, fsync off), its socket in its own
    temporary directory, started and stopped with ``pg_ctl``. As root the programs run as the ``postgres``
    user (``initdb`` refuses root). ``port`` and ``dsn`` stay the same across ``stop()`` / ``start()``."""

    def __init__(self, bindir: str, workdir: str) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.data = os.path.join(workdir, "data")
        self.port = free_port()
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=2"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.as_user: List[str] = []
        if os.geteuid() == 0:
            self.as_user = [require_binary("runuser"), "-u", "postgres", "--"]
            shutil.chown(workdir, "postgres", "postgres")
            os.chmod(workdir, 0o700)

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self.as_user, os.path.join(self.bindir, program), *args], timeout=60,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")

    def initdb(self) -> None:
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
                  "--no-sync")

    def start(self) -> None:
        """``pg_ctl start -w``: returns once the server accepts connections."""
        options = (f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
                   " -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.workdir, "server.log"), "-w", "-t", "30",
                  "-o", options, "start")

    def stop(self) -> None:
        """``pg_ctl stop -m fast -w``: the postmaster ends its connections and exits (a no-op if stopped)."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the test session (about half a second to start): ``.dsn``, ``.url``,
    ``.port``, ``.stop()``, ``.start()``, ``.stopped()``. Its directory is a new one in /tmp, not under
    pytest's root-only temporary directory, which the ``postgres`` user could not enter."""
    bindir = postgres_bin()
    workdir = tempfile.mkdtemp(prefix="sessions-postgres-")
    try:
        server = PostgresServer(bindir, workdir)
        server.initdb()
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The test server's DSN, its "session" table dropped (a store with ``create_table=True`` makes it).
    psycopg is a test dependency, but the library suites also run where only pytest, hypothesis and redis
    are installed (.ci/run's other Pythons): there the PostgreSQL tests skip."""
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute('DROP TABLE IF EXISTS "session"')
    return postgres_server.dsn


@pytest.fixture
def postgres_pool(postgres_dsn: str) -> Iterator[Any]:
    """A psycopg_pool ConnectionPool on the test server, as the README recommends (a wait bound, connections
    checked before use)."""
    pool_module = pytest.importorskip("psycopg_pool")
    pool = pool_module.ConnectionPool(postgres_dsn, min_size=1, max_size=8, open=True, timeout=2,
                                      check=pool_module.ConnectionPool.check_connection)
    yield pool
    pool.close()


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port P for a Redis Cluster node whose cluster bus port, P + 10000, is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        if _port_free(port) and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _redis_cli(cli: str, port: int, *args: str) -> str:
    return subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), *args], check=True, timeout=30,
                          capture_output=True, text=True).stdout


class RedisCluster:
    """A real three-primary Redis Cluster on 127.0.0.1 (no replicas, no persistence): three
    ``redis-server --cluster-enabled yes``, joined by ``redis-cli --cluster create``; ready once every
    node reports ``cluster_state:ok`` (2 to 6 s). Each node process is stopped by its PID."""

    SIZE = 3
    STARTUP_SECONDS = 30.0

    def __init__(self, binary: str, cli: str, workdir: str) -> None:
        self.cli = cli
        self.nodes: List[RedisServer] = []
        for n in range(self.SIZE):
            node_dir = os.path.join(workdir, f"node{n}")
            os.mkdir(node_dir)
            node = RedisServer(binary, node_dir, port=free_cluster_port(),
                               extra=["--cluster-enabled", "yes", "--cluster-config-file",
                                      os.path.join(node_dir, "nodes.conf"), "--cluster-node-timeout", "5000"])
            self.nodes.append(node)
        self.ports = [node.port for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        _redis_cli(self.cli, self.ports[0], "--cluster", "create",
                   *[f"127.0.0.1:{port}" for port in self.ports], "--cluster-replicas", "0", "--cluster-yes")
        deadline = time.monotonic() + self.STARTUP_SECONDS
        while not all("cluster_state:ok" in _redis_cli(self.cli, port, "cluster", "info") for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One Redis Cluster of three primaries for the test session: ``.ports``, ``.nodes``, ``.flushall()``."""
    cluster = RedisCluster(require_binary("redis-server"), require_binary("redis-cli"),
                           str(tmp_path_factory.mktemp("redis-cluster")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class RedisSentinel:
    """A real Redis master and one Sentinel watching it (as ``mymaster``, quorum 1), on 127.0.0.1;
    ``redis-server --sentinel`` is Sentinel (Debian's redis-sentinel package is the same binary)."""

    SERVICE = "mymaster"
    STARTUP_SECONDS = 15.0

    def __init__(self, binary: str, cli: str, workdir: str) -> None:
        self.binary = binary
        self.cli = cli
        self.workdir = workdir
        os.mkdir(os.path.join(workdir, "master"))
        self.master = RedisServer(binary, os.path.join(workdir, "master"))
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.master.start()
        config = os.path.join(self.workdir, "sentinel.conf")  # Sentinel rewrites it: it must be writable
        with open(config, "w") as out:
            out.write(f"bind 127.0.0.1\nport {self.port}\ndir {self.workdir}\n"
                      f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 1\n"
                      f"sentinel down-after-milliseconds {self.SERVICE} 5000\n")
        with open(os.path.join(self.workdir, "sentinel.log"), "ab") as log:
            self.process = subprocess.Popen([self.binary, config, "--sentinel"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.STARTUP_SECONDS
        while True:
            try:
                if str(self.master.port) in _redis_cli(self.cli, self.port, "sentinel", "get-master-addr-by-name",
                                                       self.SERVICE):
                    return
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("Sentinel did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout=5)
        self.master.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """One Redis master and one Sentinel for the test session: ``.port`` (Sentinel's), ``.SERVICE``,
    ``.master`` (a RedisServer)."""
    sentinel = RedisSentinel(require_binary("redis-server"), require_binary("redis-cli"),
                             str(tmp_path_factory.mktemp("redis-sentinel")))
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()


# --- end postgres fixtures ---


# --- hardening fixtures ---
# Hypothesis profiles: the default one for CI, and ``--hypothesis-profile=campaign`` for the reliability
# campaign of test_hardening.py, which scales its own example counts, faults and floods by the profile.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("campaign", max_examples=4000, deadline=None)
CAMPAIGN_TALLY: dict = {}  # test_hardening.py counts what it tried here: name -> count


def pytest_terminal_summary(terminalreporter) -> None:
    if CAMPAIGN_TALLY:
        terminalreporter.section("hardening campaign")
        for name, count in sorted(CAMPAIGN_TALLY.items()):
            terminalreporter.write_line(f"{name}: {count:,}")
# --- end hardening fixtures ---


# Async stores seen through the Store contract ###############################################################


class LoopThread:
    """One asyncio event loop running in a thread of its own, for the tests' async stores: their clients
    (redis.asyncio, psycopg's async pool) belong to the loop they first ran on."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="async-store-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class AsyncStoreFacade(sessions.Store):
    """An AsyncStore through the sync Store contract: each call is the async store's own method, awaited on
    ``loop``. So the store conformance suite and the concurrency tests run the async stores' own code."""

    def __init__(self, store: Any, loop: LoopThread) -> None:
        self.store, self.loop = store, loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def get(self, sid):
        return self.loop.run(self.store.get(sid))

    def set(self, sid, record, expires):
        return self.loop.run(self.store.set(sid, record, expires))

    def update(self, sid, change, expires):
        return self.loop.run(self.store.update(sid, change, expires))

    def touch(self, sid, record, expires):
        return self.loop.run(self.store.touch(sid, record, expires))

    def destroy(self, sid):
        return self.loop.run(self.store.destroy(sid))

    def clear(self):
        return self.loop.run(self.store.clear())

    def __len__(self):
        return self.loop.run(self.store.count())

    def ids(self):
        return self.loop.run(self.store.ids())

    def prune(self):
        return self.loop.run(self.store.prune())

    def records_of(self, owner):
        return self.loop.run(self.store.records_of(owner))


@pytest.fixture(scope="session")
def store_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def async_postgres_pool(postgres_dsn: str, store_loop: LoopThread) -> Iterator[Any]:
    """A psycopg_pool AsyncConnectionPool on the test server, opened on ``store_loop``."""
    pool_module = pytest.importorskip("psycopg_pool")

    async def opened() -> Any:
        pool = pool_module.AsyncConnectionPool(postgres_dsn, min_size=1, max_size=8, open=False, timeout=2,
                                               check=pool_module.AsyncConnectionPool.check_connection)
        await pool.open()
        return pool

    pool = store_loop.run(opened())
    yield pool
    store_loop.run(pool.close())


# --- soak fixtures ---
def pytest_addoption(parser) -> None:
    parser.addoption("--soak-minutes", type=float, default=None,
                     help="test_soak.py: minutes each server/store scenario runs (default: $SOAK_SECONDS, else 6 s)")
# --- end soak fixtures ---
