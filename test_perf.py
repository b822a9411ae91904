"""The opt-in throttles of issue 12 (``touch_after``, ``cookie_refresh``) and the open path's fast parts.

Both throttles are off by default (test_sessions.py keeps express-session's behaviour); here each is tested
with the injected clock: what it skips, what it never skips, and the bound it keeps on expiry."""

import json
import time
import pytest
from hypothesis import given, settings, strategies as st

import sessions
from conftest import Clock, RecordingStore, T0, sid_of
import test_interop as interop
from test_interop import long_lived_stack, node, stack  # noqa: F401 (fixtures: Node's express-session on each store)
from test_stores import redis_client, store_and_clock  # noqa: F401 (fixtures: every store)

SECRET = "test secret for the throttles"


def manager_for(store, clock, max_age=100, **options):
    return sessions.SessionManager(SECRET, store=store, clock=clock, cookie={"max_age": max_age}, **options)


def start(manager, **data):
    session = manager.open(None)
    session.update(data or {"user": "ada"})
    return manager.commit(session)[0].split(";")[0]


def read_only(manager, cookie):
    session = manager.open(cookie)
    assert not session.is_new
    session.get("user")
    return manager.commit(session)


def modify(manager, cookie):
    session = manager.open(cookie)
    assert not session.is_new
    session["views"] = session.get("views", 0) + 1
    return manager.commit(session)


def expires_of(set_cookie):
    """Max-Age of a Set-Cookie value, in seconds."""
    return int(next(p for p in set_cookie.split("; ") if p.startswith("Max-Age="))[len("Max-Age="):])


# Options ##################################################################################################


@pytest.mark.parametrize("options, word", [
    ({"touch_after": -1}, "touch_after"),
    ({"touch_after": "60"}, "touch_after"),
    ({"touch_after": True}, "touch_after"),
    ({"touch_after": float("nan")}, "touch_after"),
    ({"cookie_refresh": 0}, "cookie_refresh"),
    ({"cookie_refresh": 1.5}, "cookie_refresh"),
    ({"cookie_refresh": -0.5}, "cookie_refresh"),
    ({"cookie_refresh": True}, "cookie_refresh"),
    ({"cookie_refresh": "0.5"}, "cookie_refresh"),
    ({"cookie_refresh": float("nan")}, "cookie_refresh"),
])
def test_throttle_options_are_checked_at_construction(options, word):
    with pytest.raises(sessions.ConfigurationError, match=word):
        sessions.SessionManager(SECRET, **options)


def test_throttles_accept_their_ranges():
    from datetime import timedelta

    sessions.SessionManager(SECRET, touch_after=timedelta(minutes=5), cookie_refresh=1)
    sessions.SessionManager(SECRET, touch_after=0, cookie_refresh=0.25)


# touch_after ##############################################################################################


def test_without_touch_after_every_read_only_request_touches(store, clock):
    manager = manager_for(store, clock)
    cookie = start(manager)
    store.reset()
    for _ in range(3):
        clock.advance(1)
        read_only(manager, cookie)
    assert store.calls == [("get", sid_of(cookie)), ("touch", sid_of(cookie))] * 3


def test_touch_after_skips_the_touch_while_the_stored_expiry_is_recent(store, clock):
    manager = manager_for(store, clock, touch_after=30)
    cookie = start(manager)
    sid = sid_of(cookie)
    store.reset()
    clock.advance(10)
    assert read_only(manager, cookie) == []
    clock.advance(19.999)
    read_only(manager, cookie)
    assert store.calls == [("get", sid), ("get", sid)]  # one store call per read-only request
    assert store.expiry(sid) == T0 + 100
    clock.advance(0.001)  # 30 s since the write: due
    read_only(manager, cookie)
    assert store.calls[-1] == ("touch", sid) and store.expiry(sid) == T0 + 130
    clock.advance(29)
    read_only(manager, cookie)
    assert store.calls[-1] == ("get", sid)


def test_touch_after_never_skips_a_write(store, clock):
    manager = manager_for(store, clock, touch_after=30)
    cookie = start(manager)
    clock.advance(1)
    store.reset()
    modify(manager, cookie)
    assert store.count("set") == 1 and store.expiry(sid_of(cookie)) == T0 + 101
    clock.advance(1)
    read_only(manager, cookie)  # the write just extended it
    assert store.count("touch") == 0


def test_touch_after_counts_from_a_write_made_earlier_in_the_request(store, clock):
    """save() writes the expiry: an unchanged session then has nothing to touch at commit."""
    manager = manager_for(store, clock, touch_after=30)
    cookie = start(manager)
    clock.advance(50)
    session = manager.open(cookie)
    session["x"] = 1
    session.save()
    store.reset()
    manager.commit(session)
    assert store.calls == []


def test_touch_after_does_not_apply_to_browser_session_records(clock):
    """Without a max age the store's default TTL decides, restarted at a time the manager cannot know."""
    store = RecordingStore(sessions.MemoryStore(clock=clock, default_ttl=100))
    manager = sessions.SessionManager(SECRET, store=store, clock=clock, touch_after=30)
    cookie = start(manager)
    store.reset()
    clock.advance(1)
    read_only(manager, cookie)
    assert store.count("touch") == 1


def test_touch_after_with_an_absolute_timeout_never_extends_past_it(store, clock):
    manager = manager_for(store, clock, touch_after=30, absolute_timeout=150)
    cookie = start(manager)
    sid = sid_of(cookie)
    for _ in range(3):
        clock.advance(40)
        read_only(manager, cookie)
        assert store.expiry(sid) <= T0 + 150
    clock.advance(40)  # T0 + 160
    assert manager.open(cookie).is_new


@settings(max_examples=60, deadline=None)
@given(shares=st.lists(st.floats(min_value=0, max_value=0.999), min_size=1, max_size=25),
       touch_after=st.sampled_from([1, 10, 30, 60, 99]))
def test_a_skipped_touch_never_leaves_the_expiry_more_than_touch_after_early(shares, touch_after):
    """After every read-only request the stored expiry lies between now + max_age - touch_after and
    now + max_age: a session whose requests come less than max_age - touch_after apart lives on."""
    clock = Clock()
    store = sessions.MemoryStore(clock=clock)
    manager = manager_for(store, clock, touch_after=touch_after)
    cookie = start(manager)
    sid = sid_of(cookie)
    for share in shares:
        clock.advance(round(share * (100 - touch_after), 3))
        read_only(manager, cookie)
        now = clock()
        assert now + 100 - touch_after - 0.001 <= store.expiry(sid) <= now + 100 + 0.001


def test_touch_after_on_every_store(store_and_clock):
    """Honoured by every store (the decision is the manager's): within touch_after a read-only request
    makes exactly one store call, the read; the session lives on through later touches and then expires
    when the store's expiry says."""
    inner, clock = store_and_clock
    store = RecordingStore(inner)
    manager = manager_for(store, clock, max_age=60, touch_after=20)
    cookie = start(manager)
    sid = sid_of(cookie)
    store.reset()
    for _ in range(3):
        clock.advance(5)
        read_only(manager, cookie)
    assert store.calls == [("get", sid)] * 3
    clock.advance(10)  # 25 s since the write
    read_only(manager, cookie)
    assert store.calls[-1] == ("touch", sid)
    clock.advance(50)  # 75 s after the first write: alive thanks to the touch at 25 s
    read_only(manager, cookie)
    assert store.calls[-1] == ("touch", sid)
    clock.advance(61)
    assert manager.open(cookie).is_new


# cookie_refresh ###########################################################################################


def test_cookie_refresh_resends_a_modified_session_s_cookie_only_near_its_expiry(store, clock):
    manager = manager_for(store, clock, cookie_refresh=0.5)
    cookie = start(manager)
    sid = sid_of(cookie)
    assert store.data(sid)[sessions.SENT_EXPIRES_KEY] == (T0 + 100) * 1000
    clock.advance(10)
    assert modify(manager, cookie) == []  # the browser's copy still has 90 s of its 100
    assert store.expiry(sid) == T0 + 110  # the record slides as always
    assert store.data(sid)[sessions.SENT_EXPIRES_KEY] == (T0 + 100) * 1000
    clock.advance(39.999)
    assert modify(manager, cookie) == []  # 50.001 s left
    clock.advance(0.001)
    (sent,) = modify(manager, cookie)  # 50 s left: within 0.5 * 100
    assert expires_of(sent) == 100 and sid_of(sent) == sid
    assert store.data(sid)[sessions.SENT_EXPIRES_KEY] == (T0 + 150) * 1000
    assert store.data(sid)["views"] == 3


def test_cookie_refresh_sends_when_the_browser_s_expiry_is_unknown(store, clock):
    """A record written without the option (or by express-session) does not say when the cookie expires."""
    plain = manager_for(store, clock)
    cookie = start(plain)
    sid = sid_of(cookie)
    assert sessions.SENT_EXPIRES_KEY not in store.data(sid)
    manager = manager_for(store, clock, cookie_refresh=0.5)
    clock.advance(1)
    assert len(modify(manager, cookie)) == 1
    assert store.data(sid)[sessions.SENT_EXPIRES_KEY] == (T0 + 101) * 1000
    clock.advance(1)
    assert modify(manager, cookie) == []
    clock.advance(1)
    assert len(modify(plain, cookie)) == 1  # without the option the key is not updated: the stored one is
    assert store.data(sid)[sessions.SENT_EXPIRES_KEY] == (T0 + 101) * 1000  # kept, as __createdAt is


def test_cookie_refresh_leaves_the_other_reasons_to_send_alone(store, clock):
    manager = manager_for(store, clock, cookie_refresh=0.5)
    cookie = start(manager)
    clock.advance(1)
    session = manager.open(cookie)
    session.regenerate(keep_data=True)
    (sent,) = manager.commit(session)
    assert sid_of(sent) != sid_of(cookie)
    cookie = sent.split(";")[0]
    clock.advance(1)
    session = manager.open(cookie)
    session.cookie.max_age = 300
    session["x"] = 1
    (sent,) = manager.commit(session)
    assert expires_of(sent) == 300
    rolling = manager_for(store, clock, cookie_refresh=0.5, rolling=True)
    clock.advance(1)
    assert len(modify(rolling, cookie)) == 1 and len(read_only(rolling, cookie)) == 1


def test_the_sent_expiry_is_not_session_data(store, clock):
    manager = manager_for(store, clock, cookie_refresh=0.5)
    cookie = start(manager)
    session = manager.open(cookie)
    assert dict(session) == {"user": "ada"}
    with pytest.raises(sessions.SerializationError, match="reserved"):
        session[sessions.SENT_EXPIRES_KEY] = 1
    manager.commit(session)


def test_a_bad_sent_expiry_makes_the_record_corrupt(store, clock):
    manager = manager_for(store, clock, cookie_refresh=0.5)
    cookie = start(manager)
    sid = sid_of(cookie)
    record = json.loads(store.inner.get(sid)[0])
    record[sessions.SENT_EXPIRES_KEY] = "soon"
    store.inner.set(sid, json.dumps(record), T0 + 100)
    assert manager.open(cookie).new_reason == "not-found"


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.integers(min_value=0, max_value=99), min_size=1, max_size=25),
       share=st.sampled_from([0.1, 0.25, 0.5, 0.9, 1]))
def test_the_browser_s_cookie_outlives_every_modified_request_by_the_refresh_share(gaps, share):
    """The documented trade-off, as a bound: after every modified request the browser's copy (from the
    last Set-Cookie it got) expires at least share * max_age later, and the record max_age later."""
    clock = Clock()
    store = sessions.MemoryStore(clock=clock)
    manager = manager_for(store, clock, cookie_refresh=share)
    cookie = start(manager)
    browser_expires = clock() + 100
    sid = sid_of(cookie)
    for gap in gaps:
        clock.advance(gap)
        sent = modify(manager, cookie)
        if sent:
            browser_expires = clock() + expires_of(sent[0])
        assert browser_expires - clock() >= share * 100
        assert store.expiry(sid) == clock() + 100
    if share == 1:
        assert browser_expires == clock() + 100  # every modified request re-sent it, as by default


def test_both_throttles_together(store, clock):
    """A page view that reads costs one store call; one that writes sends no cookie until it is due."""
    manager = manager_for(store, clock, touch_after=30, cookie_refresh=0.5)
    cookie = start(manager)
    sid = sid_of(cookie)
    store.reset()
    clock.advance(10)
    assert read_only(manager, cookie) == [] and store.calls == [("get", sid)]
    clock.advance(10)
    assert modify(manager, cookie) == [] and store.calls[-1] == ("set", sid)


# The open path's fast parts ###############################################################################

_pieces = st.sampled_from(["sid", "s", "id", "a b", "=", ";", ",", " ", "\t", "\xa0", '"', "%3A", "x", ""])


@settings(max_examples=300, deadline=None)
@given(header=st.lists(_pieces, max_size=16).map("".join),
       name=st.one_of(st.sampled_from(["sid", "s", "a b", " sid", "sid=", "a;b", "a,b", "\xa0", '"']),
                      st.text(max_size=4)))
def test_looking_up_one_name_agrees_with_the_general_parser_for_every_name(header, name):
    expected = [pair for pair in sessions.parse_cookie_header(header) if pair[0] == name]
    assert sessions.parse_cookie_header(header, name) == expected


# Through Node: the sent expiry is a data key, and express-session keeps data keys ##########################


def test_the_sent_expiry_survives_express_session(stack):
    """A session written with cookie_refresh, then changed by express-session (which rewrites the cookie
    object with its fixed keys, and re-sends the cookie), still carries the expiry Python last sent: an
    older one than the browser now has, so Python can only re-send sooner than needed, never later."""
    import urllib.request

    manager = sessions.SessionManager(
        interop.SECRET, store=stack.backend.python_store(), name=interop.NAME,
        cookie={"max_age": interop.LONG_MS / 1000}, cookie_refresh=0.5,
    )
    session = manager.open(None)
    session["n"] = 1
    cookie = manager.commit(session)[0].split(";")[0]
    sent = json.loads(stack.record(sid_of(cookie)))[sessions.SENT_EXPIRES_KEY]
    on_node = urllib.request.Request(stack.node + "/set", data=b'{"n": 2}', method="POST",
                                     headers={"Content-Type": "application/json", "Cookie": cookie})
    with urllib.request.urlopen(on_node, timeout=10) as response:
        assert response.headers.get_all("Set-Cookie")  # express re-sent the cookie (it has a max age)
    for _ in range(100):  # express-session may save just after it has responded: wait, bounded
        record = json.loads(stack.record(sid_of(cookie)))
        if record["n"] == 2:
            break
        time.sleep(0.05)
    assert record["n"] == 2 and record[sessions.SENT_EXPIRES_KEY] == sent
    assert set(record["cookie"]) == {"originalMaxAge", "expires", "httpOnly", "path", "sameSite"}
    session = manager.open(cookie)
    assert dict(session) == {"n": 2} and session._sent_expires_ms == sent
    session["n"] = 3
    assert manager.commit(session) == []  # the expiry last sent is far off: no cookie


@pytest.mark.parametrize("options", [{}, {"absolute_timeout": 500}, {"cookie_refresh": 0.5},
                                     {"absolute_timeout": 500, "cookie_refresh": 0.5}])
def test_our_own_keys_are_not_data_and_do_not_count_as_changes(store, clock, options):
    manager = manager_for(store, clock, **options)
    cookie = start(manager, user="ada", roles=["a", "b"])
    data = sessions._parse_record(store.inner.get(sid_of(cookie))[0])[0]
    assert data == {"user": "ada", "roles": ["a", "b"]}
    store.reset()
    clock.advance(1)
    read_only(manager, cookie)
    assert store.count("set") == 0 and store.count("touch") == 1


# Verified cookie values are remembered: a returning browser costs a dict lookup, not an HMAC ###############


def test_only_values_that_verified_are_remembered_and_at_most_the_bound(store, clock, monkeypatch):
    monkeypatch.setattr(sessions, "VERIFIED_CACHE_SIZE", 3)
    manager = manager_for(store, clock)
    cookies = [start(manager, n=i) for i in range(5)]
    for i, cookie in enumerate(cookies):
        assert manager.open(cookie)["n"] == i
        assert 1 <= len(manager._verified) <= 3
    forged = cookies[0][:-3] + ("AAA" if not cookies[0].endswith("AAA") else "BBB")
    unsigned = "sid=" + sid_of(cookies[0])
    before = dict(manager._verified)
    for cookie in (forged, unsigned):
        assert manager.open(cookie).new_reason == "bad-signature"
    assert manager._verified == before


def test_a_remembered_value_does_not_keep_a_destroyed_session(store, clock):
    manager = manager_for(store, clock)
    cookie = start(manager)
    session = manager.open(cookie)
    session.destroy()
    manager.commit(session)
    assert manager.open(cookie).new_reason == "not-found"


def test_a_remembered_value_signed_with_an_old_secret_is_re_signed_every_time(store, clock):
    old = manager_for(store, clock)
    cookie = start(old)
    rotated = sessions.SessionManager(["the new secret", SECRET], store=store, clock=clock, cookie={"max_age": 100})
    for _ in range(2):
        session = rotated.open(cookie)
        session.get("user")
        (sent,) = rotated.commit(session)
        assert sid_of(sent, "the new secret") == sid_of(cookie)
    assert manager_for(store, clock).open(sent.split(";")[0]).new_reason == "bad-signature"


def test_cookie_refresh_with_a_concurrent_write(store, clock):
    """Two requests of one session: both changes are merged (test_concurrency.py), and the record keeps
    the expiry of the cookie the later one sent."""
    manager = manager_for(store, clock, cookie_refresh=0.5)
    cookie = start(manager)
    sid = sid_of(cookie)
    clock.advance(60)  # 40 s left of the browser's copy: due
    first, second = manager.open(cookie), manager.open(cookie)
    first["x"] = 1
    assert len(manager.commit(first)) == 1
    clock.advance(1)
    second["y"] = 2
    assert len(manager.commit(second)) == 1
    assert store.data(sid) == {"user": "ada", "x": 1, "y": 2, sessions.SENT_EXPIRES_KEY: (T0 + 161) * 1000}
    assert store.expiry(sid) == T0 + 161
