"""Only ``SessionError`` subclasses leave the library, whatever the input (SPEC 9.16, issue 10 item 3).

Each red-team finding has a test here that failed before its fix; the property tests at the end feed
generated data, headers and options through the public API and accept only a result or a SessionError.
"""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessions

SECRET = "keyboard cat"
HUGE = 10**400  # beyond any float


def cookie_for(sid: str) -> str:
    return "sid=s:" + sessions.sign(sid, SECRET)


class TextStore(sessions.Store):
    """A dict of record texts, returned as plain str: the manager then reads the record's own expiry."""

    def __init__(self) -> None:
        self.records = {}

    def get(self, sid):
        return self.records.get(sid)

    def set(self, sid, record, expires):
        self.records[sid] = record

    def touch(self, sid, record, expires):
        pass

    def destroy(self, sid):
        self.records.pop(sid, None)

    def __len__(self):
        return len(self.records)


def stored(store: sessions.Store, sid: str, record: str) -> None:
    store.set(sid, record, None)


def committed_record(manager: sessions.SessionManager, session: sessions.Session) -> str:
    manager.commit(session)
    found = manager.store.get(session.id)
    return found[0] if isinstance(found, tuple) else found


# Records ##################################################################################################


@pytest.mark.parametrize("make_store", [sessions.MemoryStore, TextStore])
@pytest.mark.parametrize("absolute_timeout", [None, 3600])
@pytest.mark.parametrize("created", ["1e400", "-1e400", "1e308", "-1", '"soon"', "true", "[]"])
def test_a_record_with_an_unusable_creation_time_is_treated_as_missing(make_store, absolute_timeout, created):
    store = make_store()
    manager = sessions.SessionManager(SECRET, store=store, absolute_timeout=absolute_timeout)
    stored(store, "abc", '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},'
                         f'"__createdAt":{created},"n":1}}')
    session = manager.open(cookie_for("abc"))
    assert session.is_new and "n" not in session


@pytest.mark.parametrize("field", ['"originalMaxAge":1e400', '"originalMaxAge":-1e400',
                                   '"expires":"+275760-09-13T00:00:00.001Z"', '"expires":12'])
def test_a_record_with_an_unusable_cookie_field_is_treated_as_missing(field):
    store = TextStore()  # a store enforcing expiry itself would make the manager skip the expires text
    manager = sessions.SessionManager(SECRET, store=store)
    stored(store, "abc", '{"cookie":{' + field + ',"httpOnly":true,"path":"/"},"n":1}')
    assert manager.open(cookie_for("abc")).is_new


# Session data #############################################################################################


@pytest.mark.parametrize("value, why", [
    (10**5000, "digits"),
    ([1, 10**5000], "digits"),
    ("\ud800", "surrogate"),
    ({"k": "a\udfffb"}, "surrogate"),
], ids=["int", "int-in-list", "surrogate", "surrogate-in-dict"])
def test_values_that_cannot_round_trip_are_refused_at_assignment_naming_the_key(value, why):
    manager = sessions.SessionManager(SECRET)
    session = manager.open(None)
    with pytest.raises(sessions.SerializationError, match="'bad'"):
        session["bad"] = value
    assert "bad" not in session


def test_a_key_with_a_lone_surrogate_is_refused():
    session = sessions.SessionManager(SECRET).open(None)
    with pytest.raises(sessions.SerializationError):
        session["\ud800"] = 1


def nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_the_documented_depth_is_stored_and_loads_back():
    manager = sessions.SessionManager(SECRET)
    session = manager.open(None)
    session["deep"] = nested(sessions.MAX_DEPTH - 1)  # the session object itself is one level
    cookie = manager.commit(session)[0].split(";", 1)[0]
    assert manager.open(cookie)["deep"] == nested(sessions.MAX_DEPTH - 1)


@pytest.mark.parametrize("depth", [sessions.MAX_DEPTH, 990, 5000])
def test_nesting_beyond_the_documented_depth_is_refused_at_assignment(depth):
    session = sessions.SessionManager(SECRET).open(None)
    with pytest.raises(sessions.SerializationError, match="'deep'"):
        session["deep"] = nested(depth)


@pytest.mark.parametrize("spoil", [
    lambda box: box.append(10**5000),
    lambda box: box.append("\udc80"),
    lambda box: box.append(nested(5000)),
])
def test_a_value_spoiled_in_place_fails_the_commit_and_writes_nothing(spoil):
    store = sessions.MemoryStore()
    manager = sessions.SessionManager(SECRET, store=store)
    session = manager.open(None)
    session["box"] = []
    spoil(session["box"])
    with pytest.raises(sessions.SerializationError, match="'box'"):
        manager.commit(session)
    assert len(store) == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("cookie", "__createdAt")),
                       json_values, max_size=5))
def test_every_committed_record_is_utf8_json_that_loads_back_to_the_same_session(data):
    manager = sessions.SessionManager(SECRET)
    session = manager.open(None)
    try:
        for key, value in data.items():
            session[key] = value
    except sessions.SerializationError:
        return  # refused up front: fine, nothing was stored
    set_cookies = manager.commit(session)
    if not data:
        return
    record = manager.store.get(session.id)[0]
    record.encode("utf-8")  # strict: no lone surrogates
    assert json.loads(record)["cookie"]
    again = manager.open(set_cookies[0].split(";", 1)[0])
    assert same_in_javascript(dict(again), json.loads(json.dumps(data)))


def same_in_javascript(loaded, original) -> bool:
    """Equal as JavaScript sees JSON: one number type, so a float written as JavaScript writes it (1.0 as
    ``1``, 1e16 as ``10000000000000000``) may load back as the int of the same number."""
    if isinstance(original, float):
        return not isinstance(loaded, bool) and isinstance(loaded, (int, float)) and float(loaded) == original
    if isinstance(original, dict):
        return isinstance(loaded, dict) and list(loaded) == list(original) and all(
            same_in_javascript(loaded[k], v) for k, v in original.items())
    if isinstance(original, list):
        return isinstance(loaded, list) and len(loaded) == len(original) and all(
            map(same_in_javascript, loaded, original))
    return type(loaded) is type(original) and loaded == original


# Cookie headers ###########################################################################################


@pytest.mark.parametrize("header", ["a=%41\ud800", "sid=%41\udfff%42", "sid=\ud800", "\ud800=1; sid=%zz"])
def test_parse_cookie_header_never_raises_on_lone_surrogates(header):
    sessions.parse_cookie_header(header)
    sessions.parse_cookie_header(header, "sid")


@given(st.text(max_size=60))
def test_open_never_raises_on_any_cookie_header(text):
    manager = sessions.SessionManager(SECRET)
    for header in (text, "sid=" + text, "sid=s:" + text, [text, "sid=" + text]):
        assert manager.open(header).is_new


# Options ##################################################################################################


@pytest.mark.parametrize("make", [
    lambda: sessions.SessionManager(SECRET, cookie={"max_age": HUGE}),
    lambda: sessions.SessionManager(SECRET, absolute_timeout=HUGE),
    lambda: sessions.SessionManager(SECRET, absolute_timeout=-HUGE),
    lambda: sessions.MemoryStore(default_ttl=HUGE),
    lambda: sessions.MemoryStore(default_ttl=None),
    lambda: sessions.SessionManager("\ud800"),
    lambda: sessions.SessionManager([SECRET, "x\udc00"]),
    lambda: sessions.CookieOptions(max_age=float("nan")),
])
def test_impossible_options_are_configuration_errors(make):
    with pytest.raises(sessions.ConfigurationError):
        make()


@pytest.mark.parametrize("value", [HUGE, -1, float("inf"), "60", True])
def test_the_cookie_max_age_setter_refuses_bad_values_with_a_configuration_error(value):
    session = sessions.SessionManager(SECRET).open(None)
    with pytest.raises(sessions.ConfigurationError):
        session.cookie.max_age = value


option_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-HUGE, max_value=HUGE), st.floats(), st.text(max_size=8),
    st.binary(max_size=4), st.lists(st.integers(), max_size=2), st.timedeltas(),
)


@settings(deadline=None, max_examples=300)
@given(st.dictionaries(st.sampled_from(["max_age", "path", "domain", "secure", "same_site", "http_only",
                                        "partitioned", "priority"]), option_values, max_size=4),
       st.dictionaries(st.sampled_from(["resave", "rolling", "save_uninitialized", "absolute_timeout",
                                        "trust_proxy", "name"]), option_values, max_size=3),
       option_values)
def test_any_options_give_a_manager_or_a_configuration_error(cookie, options, secret):
    try:
        sessions.SessionManager(SECRET if secret is None else secret, cookie=cookie, **options)
    except sessions.ConfigurationError:
        pass
    try:
        sessions.MemoryStore(default_ttl=cookie.get("max_age", 60), max_sessions=options.get("name"))
    except sessions.ConfigurationError:
        pass

