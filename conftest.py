"""Helpers every test file shares: an injectable clock, the session id inside a cookie, and a store that
records the manager's calls. Import the classes and functions (``from conftest import Clock, ...``) or use
the fixtures ``clock`` and ``store``; a test module may override either fixture."""

from __future__ import annotations

import json
import time
from typing import Any, List, Optional, Set, Tuple, Union
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


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> RecordingStore:
    return RecordingStore(clock=clock)


# Other branches: add shared fixtures below, each in a block delimited by `# --- <branch> fixtures ---`
# comments, so that merging the branches is a concatenation.
