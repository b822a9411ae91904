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
import time
from typing import Any, Iterator, List, Optional, Set, Tuple, Union
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1, without persistence, stopped by its PID.

    ``port`` and ``url`` stay the same across ``stop()`` / ``start()``, so clients made from ``url``
    reconnect once the server is back (the outage tests rely on it).
    """

    STARTUP_SECONDS = 10.0
    #: How the server persists: not at all (a subclass may write an append-only file instead).
    PERSISTENCE: Tuple[str, ...] = ("--save", "", "--appendonly", "no")

    def __init__(self, binary: str, workdir: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
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
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *self.PERSISTENCE,
                 "--dir", self.workdir],
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

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stop the server for the block, and start it again on the same port afterwards, whatever happens."""
        self.stop()
        try:
            yield
        finally:
            self.start()

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


# --- soak fixtures ---
def pytest_addoption(parser) -> None:
    parser.addoption("--soak-minutes", type=float, default=None,
                     help="test_soak.py: minutes each server/store scenario runs (default: $SOAK_SECONDS, else 8 s)")
# --- end soak fixtures ---
