"""Framework adapters (Flask, ASGI: Starlette and FastAPI, Django) under real servers, the README's
framework recipes run as written, and the core additions the adapters rely on."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import sessions


# Core additions the adapters rely on (CONTRACT decision 3) ################################################


def _pair(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0]


def _loaded_session(manager: sessions.SessionManager, **data: Any) -> Tuple[sessions.Session, str]:
    """A stored session with ``data``, reopened from its cookie: (session, cookie pair)."""
    session = manager.open(None)
    session.update(data)
    cookie = _pair(manager.commit(session)[0])
    return manager.open(cookie), cookie


class _CountingStore(sessions.MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        self.writes += 1
        super().set(sid, record, expires)


def test_setting_modified_forces_a_save_of_unchanged_data():
    store = _CountingStore()
    manager = sessions.SessionManager("secret", store=store)
    session, cookie = _loaded_session(manager, n=1)
    manager.commit(session)
    assert store.writes == 1  # unchanged: touched, not written
    again = manager.open(cookie)
    again.modified = True
    assert again.modified
    manager.commit(again)
    assert store.writes == 2


def test_clearing_modified_does_not_hide_a_data_change():
    store = sessions.MemoryStore()
    manager = sessions.SessionManager("secret", store=store)
    session, cookie = _loaded_session(manager, n=1)
    session["n"] = 2
    session.modified = False
    assert session.modified
    manager.commit(session)
    assert manager.open(cookie)["n"] == 2


def test_flush_deletes_the_record_now_and_expires_the_cookie_when_nothing_follows():
    store = sessions.MemoryStore()
    manager = sessions.SessionManager("secret", store=store)
    session, cookie = _loaded_session(manager, user="alice")
    old_id = session.id
    session.flush()
    assert store.get(old_id) is None  # now, not at commit
    assert session.is_new and session.id != old_id and dict(session) == {}
    (clearing,) = manager.commit(session)
    assert "Max-Age=0" in clearing
    assert len(store) == 0


def test_flush_then_write_stores_a_new_session_under_a_new_id():
    store = sessions.MemoryStore()
    manager = sessions.SessionManager("secret", store=store)
    session, cookie = _loaded_session(manager, user="alice")
    old_id = session.id
    session.flush()
    session["flash"] = "bye"
    (set_cookie,) = manager.commit(session)
    assert "Max-Age=0" not in set_cookie
    reopened = manager.open(_pair(set_cookie))
    assert dict(reopened) == {"flash": "bye"} and reopened.id != old_id
    assert store.ids() == [reopened.id]
    assert manager.open(cookie).is_new  # the old id never comes back
