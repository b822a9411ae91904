"""Shared pytest fixtures. Each branch adds its own block between its marker comments."""

from __future__ import annotations

# --- stores fixtures ---
import contextlib
import os
import shutil
import socket
import subprocess
import time
from typing import Iterator, Optional

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_binary(name: str) -> str:
    """The path of ``name``; fails under CI=1 when it is missing (CONTRACT decision 4), else skips."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("CI"):
            pytest.fail(message + " (required under CI)")
        pytest.skip(message)
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
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.workdir],
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
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

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
