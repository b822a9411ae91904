"""Core tests of sessions.py: cookie codec, signing, cookie options, stores, sessions, save rules, expiry,
record format, errors and logging.

Everything runs on an injected clock (``Clock``); nothing sleeps. Test vectors come from express-session
1.19 and cookie-signature 1.0.7 (see the reference notes): our Set-Cookie differs from express only by the
``Max-Age=N`` attribute that follows the value when the cookie has a lifetime.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import re
import sys
import sysconfig
import threading
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import sessions
from conftest import T0, Clock, LaxStore, RecordingStore, record_of
from conftest import sid_of as _sid_of

SECRET = "keyboard cat"
APPLE_VALUE = "s%3Aapple.D8Y%2BpkTAmeR0PobOhY4G97PRW%2Bj7bUnP%2F5m6%2FOn1MCU"  # TV1
EXPIRES_60 = "Expires=Tue, 14 Nov 2023 22:14:20 GMT"
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)


# Helpers ##################################################################################################


def ids_from(*ids):
    """A genid that returns the given ids in turn."""
    it = iter(ids)
    return lambda: next(it)


def make_manager(clock=None, store=None, **options) -> sessions.SessionManager:
    clock = clock or Clock()
    if store is None:
        store = RecordingStore(sessions.MemoryStore(clock=clock))
    options.setdefault("secret", SECRET)
    return sessions.SessionManager(store=store, clock=clock, **options)


def cookie_header_for(sid: str, secret=SECRET, name: str = "sid") -> str:
    """The Cookie request header a browser sends for a session id signed with ``secret``."""
    return f"{name}={quote('s:' + sessions.sign(sid, secret), safe='')}"


def request_cookie(set_cookie: str) -> str:
    """The ``name=value`` part of a Set-Cookie value, i.e. what the browser sends back."""
    return set_cookie.split(";", 1)[0]


def attributes(set_cookie: str) -> dict:
    """Set-Cookie attributes by lower-case name (flags map to True)."""
    out = {}
    for part in set_cookie.split("; ")[1:]:
        key, _, value = part.partition("=")
        out[key.lower()] = value if _ else True
    return out


def sid_of(set_cookie: str, secret=SECRET) -> str:
    return _sid_of(set_cookie, secret)


class Client:
    """A one-cookie browser: sends its cookie, runs ``handler(session)``, commits, keeps what it is sent."""

    def __init__(self, manager: sessions.SessionManager, cookie: str | None = None) -> None:
        self.manager = manager
        self.cookie = cookie
        self.last_set_cookies: list = []

    def request(self, handler=None, status=200, secure=False, path="/"):
        session = self.manager.open(self.cookie, secure=secure, path=path)
        if handler is not None:
            handler(session)
        self.last_set_cookies = self.manager.commit(session, status)
        for value in self.last_set_cookies:
            self.cookie = None if attributes(value).get("max-age") == "0" else request_cookie(value)
        return session


def put(key, value):
    def handler(session):
        session[key] = value

    return handler


def increment(session):
    session["n"] = session.get("n", 0) + 1


# 1. Cookie header parsing (SPEC 7) #########################################################################


def test_parse_returns_pairs_in_order_keeping_duplicates():
    assert sessions.parse_cookie_header("a=1; sid=x; b=2; sid=y") == [("a", "1"), ("sid", "x"), ("b", "2"), ("sid", "y")]
    assert sessions.parse_cookie_header("a=1; sid=x; b=2; sid=y", "sid") == [("sid", "x"), ("sid", "y")]


@pytest.mark.parametrize("header", [None, "", ";", " ; ;; ", "novalue", "=x", " =x; =; ==="])
def test_parse_yields_nothing_for_empty_or_nameless_input(header):
    assert sessions.parse_cookie_header(header) == []


def test_parse_strips_only_space_and_tab_from_names_and_values():
    header = "\t sid \t= \tv1\t ; \xa0sid=v2; sid\xa0=v3; \nsid=v4; \u2003sid=v5"
    assert sessions.parse_cookie_header(header, "sid") == [("sid", "v1")]
    names = [name for name, _ in sessions.parse_cookie_header(header)]
    assert names == ["sid", "\xa0sid", "sid\xa0", "\nsid", "\u2003sid"]


def test_parse_matches_names_exactly():
    header = "SID=a; sid2=b; xsid=c; sid=d"
    assert sessions.parse_cookie_header(header, "sid") == [("sid", "d")]


@pytest.mark.parametrize(
    "raw, decoded",
    [
        ('"quoted"', "quoted"),
        ('"s%3Aa.b"', "s:a.b"),
        ('"', '"'),
        ('""', ""),
        ("s%3Aapple.x%2By%2Fz", "s:apple.x+y/z"),
        ("%e2%82%ac", "\u20ac"),
        ("a+b", "a+b"),  # '+' is not a space (no unquote_plus)
        ("100%", "100%"),  # invalid escape: the raw value is kept
        ("%ZZ%3A", "%ZZ%3A"),
        ("%FF%3A", "%FF%3A"),  # invalid UTF-8: raw value kept
        ("%3", "%3"),
        ("s:raw.value", "s:raw.value"),
    ],
)
def test_parse_unquotes_and_percent_decodes_with_fallback(raw, decoded):
    assert sessions.parse_cookie_header(f"x=1; sid={raw}; y=2", "sid") == [("sid", decoded)]


def test_parse_reads_several_headers_and_comma_joined_headers():
    assert sessions.parse_cookie_header(["a=1; sid=x", "sid=y", "b=2"], "sid") == [("sid", "x"), ("sid", "y")]
    assert sessions.parse_cookie_header("a=1; sid=x, sid=y", "sid") == [("sid", "x"), ("sid", "y")]
    assert sessions.parse_cookie_header([], "sid") == []


def test_parse_reads_at_most_8_kib():
    filler = "a=b; " * 200_000  # 1 MB
    assert len(filler) > 100 * sessions.MAX_COOKIE_HEADER
    assert sessions.parse_cookie_header(filler + "sid=late", "sid") == []
    assert sessions.parse_cookie_header("sid=early; " + filler, "sid") == [("sid", "early")]
    assert len(sessions.parse_cookie_header(filler)) <= sessions.MAX_COOKIE_HEADER // 4
    # the cap applies to several headers together too
    assert sessions.parse_cookie_header([filler, "sid=late"], "sid") == []


@pytest.mark.parametrize(
    "header",
    ['"' * 8192, "%" * 8192, "=" * 8192, ";" * 8192, "sid=" + '"' * 8188, "sid=" + "%" * 8188,
     "sid=" + "%2" * 4094, "sid=" + "\\" * 8188, ("a=" + '"\\' * 2000 + ";") * 100],
    ids=["quotes", "percents", "equals", "semicolons", "sid-quotes", "sid-percents", "sid-half-escapes",
         "sid-backslashes", "quoted-backslashes"],
)
def test_parse_survives_pathological_headers(header):
    pairs = sessions.parse_cookie_header(header * 128)  # 1 MB, cut at 8 KiB
    assert all(len(name) + len(value) <= sessions.MAX_COOKIE_HEADER for name, value in pairs)
    sessions.parse_cookie_header(header * 128, "sid")


_segments = st.tuples(
    st.sampled_from(["sid", " sid", "sid\t", "\xa0sid", "xsid", "sidx", "", "s", "a"]),
    st.sampled_from(["=", " = ", "", "=="]),
    st.sampled_from(["v", "", "s%3Ax", '"q"', "sid", "a=sid", " sid=v"]),
    st.sampled_from([";", ",", "; ", ";;", " , ", ""]),
).map("".join)


@SLOW
@given(st.lists(_segments, max_size=8).map("".join))
def test_parse_by_name_agrees_with_the_general_parser(header):
    expected = [pair for pair in sessions.parse_cookie_header(header) if pair[0] == "sid"]
    assert sessions.parse_cookie_header(header, "sid") == expected


@given(st.one_of(st.text(), st.lists(st.text(), max_size=4), st.none()), st.one_of(st.none(), st.text(max_size=5)))
def test_parse_never_raises(header, name):
    pairs = sessions.parse_cookie_header(header, name)
    assert all(isinstance(k, str) and isinstance(v, str) and k for k, v in pairs)
    if name is not None:
        assert all(k == name for k, _ in pairs)


def reference_try_decode(value):
    """cookie 0.7.2's tryDecode: decodeURIComponent only when there is a '%', the raw text when it throws."""
    if "%" not in value or re.search(r"%(?![0-9A-Fa-f]{2})", value):
        return value
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return value


@given(st.text(alphabet="%3Aa2BbFf0:+/x\u00e9E", max_size=30))
def test_percent_decoding_matches_decode_uri_component(value):
    assert sessions.parse_cookie_header("sid=" + value, "sid") == [("sid", reference_try_decode(value))]


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_encoded_values_round_trip(value):
    encoded = quote(value, safe="-_.!~*'()")  # JavaScript's encodeURIComponent
    assert sessions.parse_cookie_header("a=b; sid=" + encoded, "sid") == [("sid", value)]


NASTY_NEIGHBOURS = [
    "", " ", ";;", "=x", "=", "novalue", 'q="quoted value"', 'j={"a":1,"b":[2,3]}', "u=\u00e9\u4e2d\U0001f600",
    "p=%", "p=%%", "p=%E0%A4%A", "p=%ZZ", "sp ace=va lue", '"', 'a="', "sid", "sid=", "sid=garbage",
    "sid=s:forged.sig", "sid=s%3Aforged.c2ln", "\xa0sid=x", "tab\t=\tx", "a=b=c", "x=\x00\x01", "\\", ",",
]
neighbour = st.one_of(st.sampled_from(NASTY_NEIGHBOURS), st.text(max_size=40),
                      st.builds("{}={}".format, st.text(max_size=10), st.text(max_size=20)))


@SLOW
@given(before=st.lists(neighbour, max_size=8), after=st.lists(neighbour, max_size=8),
       raw=st.booleans(), separator=st.sampled_from(["; ", ";", " ; ", ";\t", ", "]), as_list=st.booleans())
def test_valid_session_cookie_survives_any_neighbours(before, after, raw, separator, as_list):
    clock = Clock()
    manager = make_manager(clock, genid=ids_from("apple"))
    Client(manager).request(put("user", "bob"))
    value = "s:" + sessions.sign("apple", SECRET) if raw else APPLE_VALUE
    if as_list:  # several Cookie headers
        header = [separator.join(before), f"sid={value}", separator.join(after)]
    else:
        header = separator.join([*before, f"sid={value}", *after])
    session = manager.open(header)
    assert (session.id, session.is_new, dict(session)) == ("apple", False, {"user": "bob"})


# 2. Signing (SPEC 3, reference 1.1 and 1.4) ################################################################


@pytest.mark.parametrize(
    "value, secret, signed",
    [
        ("hello", "tobiiscool", "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"),
        ("hello", bytes.fromhex("A0ABBC0C"), "hello.hIvljrKw5oOZtHHSq5u+MlL27cgnPKX77y7F+x5r1to"),
        ("real data", "actual sekrit password", "real data.YYlk/GMK4eU1tRrQL2IzyrylAuKrlqvsm5FgfC4z3Ko"),
        ("a.b", "k", "a.b.j+64Xf4O5ZEXP+qQsHKDtNnvAIHe3v1wxoNRgirN2JQ"),
        ("apple", SECRET, "apple.D8Y+pkTAmeR0PobOhY4G97PRW+j7bUnP/5m6/On1MCU"),
        ("hTQfBnNnfqSMC9ZnCTJ1CHvu0JOJ1nKM", "s3cr3t-new",
         "hTQfBnNnfqSMC9ZnCTJ1CHvu0JOJ1nKM.FGGd1VdnK3nGXlFFYxYc5+bMHQkbQ2fZgGZh8ovtftM"),
    ],
)
def test_sign_matches_cookie_signature_vectors(value, secret, signed):
    assert sessions.sign(value, secret) == signed
    assert sessions.unsign(signed, secret) == value
    assert sessions.unsign(signed, [secret]) == value


def test_sign_with_a_long_secret_matches_hmac():
    import base64
    import hashlib
    import hmac

    secret = "x" * 200  # longer than the SHA-256 block: the key is hashed first
    mac = base64.b64encode(hmac.new(secret.encode(), b"v", hashlib.sha256).digest()).decode().rstrip("=")
    assert sessions.sign("v", secret) == "v." + mac
    assert sessions.sign("v", secret.encode()) == "v." + mac


def test_sign_rejects_non_str_values_and_empty_secrets():
    with pytest.raises(TypeError):
        sessions.sign(b"hello", "k")
    for secret in ("", b"", None, 42):
        with pytest.raises(sessions.ConfigurationError, match="secret"):
            sessions.sign("hello", secret)


def test_unsign_rejects_wrong_secret_and_garbage():
    val = sessions.sign("real data", "actual sekrit password")
    for bad in ("garbage" + val, "garbage." + val, val + ".garbage", val + "garbage", val + "=",
                "fake unsigned data", "", ".", "real data.", val.replace(".", "")):
        assert sessions.unsign(bad, "actual sekrit password") is None, bad
    assert sessions.unsign(sessions.sign("hello", "tobiiscool"), "luna") is None
    assert sessions.unsign(None, "k") is None
    assert sessions.unsign(b"hello.x", "k") is None
    assert sessions.unsign("\ud800.x", "k") is None  # lone surrogate


def test_unsign_tries_every_secret_and_first_signs():
    signed_old = sessions.sign("hTQfBnNnfqSMC9ZnCTJ1CHvu0JOJ1nKM", "s3cr3t-old")
    assert sessions.unsign(signed_old, ["s3cr3t-new"]) is None
    assert sessions.unsign(signed_old, ["s3cr3t-new", "s3cr3t-old"]) == "hTQfBnNnfqSMC9ZnCTJ1CHvu0JOJ1nKM"
    assert sessions.unsign(signed_old, [b"s3cr3t-new", bytearray(b"s3cr3t-old")]) == "hTQfBnNnfqSMC9ZnCTJ1CHvu0JOJ1nKM"
    with pytest.raises(sessions.ConfigurationError, match="secret"):
        sessions.unsign(signed_old, [])


secret_strategy = st.one_of(st.text(min_size=1), st.binary(min_size=1))
value_strategy = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


@given(value_strategy, secret_strategy, st.lists(secret_strategy, max_size=3))
def test_sign_unsign_round_trip(value, secret, others):
    signed = sessions.sign(value, secret)
    assert signed.startswith(value + ".")
    assert sessions.unsign(signed, secret) == value
    assert sessions.unsign(signed, [*others, secret]) == value


@st.composite
def tampered(draw):
    value = draw(value_strategy)
    secret = draw(secret_strategy)
    signed = sessions.sign(value, secret)
    kind = draw(st.sampled_from(["substitute", "delete", "insert"]))
    if kind == "delete":
        i = draw(st.integers(0, len(signed) - 1))
        mutated = signed[:i] + signed[i + 1:]
    else:
        i = draw(st.integers(0, len(signed) - (kind == "substitute")))
        char = draw(st.characters(blacklist_categories=("Cs",)))
        mutated = signed[:i] + char + signed[i + (kind == "substitute"):]
    assume(mutated != signed)
    return mutated, secret


@settings(max_examples=500)
@given(tampered())
def test_every_single_character_tamper_is_rejected(case):
    mutated, secret = case
    assert sessions.unsign(mutated, secret) is None


# 3. Set-Cookie values (SPEC 3, reference 1.4) ##############################################################


@pytest.mark.parametrize(
    "options, expected",
    [
        pytest.param(dict(name="connect.sid", cookie={"same_site": None}),
                     f"connect.sid={APPLE_VALUE}; Path=/; HttpOnly", id="TV1"),
        pytest.param(dict(name="connect.sid", cookie={"same_site": None, "max_age": 60}),
                     f"connect.sid={APPLE_VALUE}; Max-Age=60; Path=/; {EXPIRES_60}; HttpOnly", id="TV2"),
        pytest.param(dict(name="connect.sid", cookie={"same_site": None, "max_age": timedelta(hours=1)}),
                     f"connect.sid={APPLE_VALUE}; Max-Age=3600; Path=/; Expires=Tue, 14 Nov 2023 23:13:20 GMT; HttpOnly",
                     id="TV7"),
        pytest.param(dict(cookie={}), f"sid={APPLE_VALUE}; Path=/; HttpOnly; SameSite=Lax", id="defaults"),
    ],
)
def test_set_cookie_matches_express_vectors(options, expected):
    manager = make_manager(genid=ids_from("apple"), **options)
    session = manager.open(None)
    session["user"] = "bob"
    assert manager.commit(session) == [expected]


def test_set_cookie_tv3_secret_list_signs_with_the_first():
    sid = "hTQfBnNnfqSMC9ZnCTJ1CHvu0JOJ1nKM"
    client = Client(make_manager(secret=["s3cr3t-new", "s3cr3t-old"], name="connect.sid", genid=ids_from(sid),
                                 cookie={"same_site": None, "max_age": 60}))
    client.request(put("user", "bob"))
    assert client.last_set_cookies == [
        "connect.sid=s%3AhTQfBnNnfqSMC9ZnCTJ1CHvu0JOJ1nKM.FGGd1VdnK3nGXlFFYxYc5%2BbMHQkbQ2fZgGZh8ovtftM; Max-Age=60; "
        f"Path=/; {EXPIRES_60}; HttpOnly"
    ]


def test_set_cookie_tv4_all_attributes():
    # express's TV4 has partitioned without secure, which browsers reject and we refuse; same with secure=True.
    manager = make_manager(genid=ids_from("apple"), cookie=dict(
        max_age=60, domain="example.com", path="/", secure=True, http_only=True, same_site="lax",
        partitioned=True, priority="high"))
    session = manager.open(None, secure=True)
    session["user"] = "bob"
    assert manager.commit(session) == [
        f"sid={APPLE_VALUE}; Max-Age=60; Domain=example.com; Path=/; {EXPIRES_60}; HttpOnly; Secure; Partitioned; "
        "Priority=High; SameSite=Lax"
    ]


@pytest.mark.parametrize("sid, value", [
    ("%", "s%3A%25.kzQ6x52kKVdF35Qh62AWk4ZekS28K5XYCXKa%2FOTZ01g"),  # TV5
    ("/foo", "s%3A%2Ffoo.paEKBtAHbV5s1IB8B2zPnzAgYmmnRPIqObW4VRYj%2FMQ"),  # TV6
])
def test_set_cookie_encodes_unsafe_id_characters(sid, value):
    client = Client(make_manager(genid=ids_from(sid)))
    client.request(put("user", "bob"))
    assert request_cookie(client.last_set_cookies[0]) == f"sid={value}"
    assert client.request().id == sid  # and it reads back


@pytest.mark.parametrize("header", [
    f"sid={APPLE_VALUE}",
    "sid=s:" + sessions.sign("apple", SECRET),  # raw, not percent-encoded
    f'sid="{APPLE_VALUE}"',
])
def test_signed_cookie_loads_in_every_accepted_spelling(header):
    manager = make_manager(genid=ids_from("apple"))
    Client(manager).request(put("user", "bob"))
    session = manager.open(header)
    assert (session.id, session.is_new, session["user"]) == ("apple", False, "bob")


@pytest.mark.parametrize("value", [
    "apple", "s%3Aapple", "s:apple", APPLE_VALUE[:-1], APPLE_VALUE + "x", APPLE_VALUE.replace("apple", "apples"),
    APPLE_VALUE.replace("D8Y", "D9Y"), "s%3Aapple." + "A" * 43, "s:" + sessions.sign("apple", "other secret"),
    "s%3A\u00e9pple.x", "s:" + "a" * 5000 + ".x",
])
def test_unsigned_or_wrongly_signed_cookie_starts_a_new_session_without_store_lookup(value, store):
    manager = make_manager(store=store, genid=ids_from("apple", "new"))
    Client(manager).request(put("user", "bob"))
    store.reset()
    session = manager.open(f"sid={value}")
    assert (session.id, session.is_new, dict(session)) == ("new", True, {})
    assert store.calls == []


# 3b. Cookie options and construction errors (SPEC 3, 7) ###################################################


def test_cookie_option_defaults_and_normalisation():
    options = sessions.CookieOptions()
    assert (options.path, options.domain, options.max_age, options.http_only, options.secure, options.same_site,
            options.partitioned, options.priority) == ("/", None, None, True, False, "Lax", False, None)
    options = sessions.CookieOptions(same_site="strict", priority="hIgH", max_age=timedelta(minutes=1))
    assert (options.same_site, options.priority, options.max_age) == ("Strict", "High", 60.0)
    assert sessions.CookieOptions(same_site="none", secure=True).same_site == "None"
    manager = make_manager(cookie={"max_age": 5, "secure": "auto"})
    assert manager.cookie_options == sessions.CookieOptions(max_age=5, secure="auto")


BAD_OPTIONS = [
    (dict(secret=""), "secret"),
    (dict(secret=b""), "secret"),
    (dict(secret=[]), "secret"),
    (dict(secret=None), "secret"),
    (dict(secret=["ok", ""]), "secret"),
    (dict(secret=42), "secret"),
    (dict(cookie={"path": "/a;b"}), "path"),
    (dict(cookie={"path": "/a\r\nSet-Cookie: x=y"}), "path"),
    (dict(cookie={"path": "relative"}), "path"),
    (dict(cookie={"path": "/\u00e9"}), "path"),
    (dict(cookie={"domain": "exa mple.com"}), "domain"),
    (dict(cookie={"domain": "example.com;x=y"}), "domain"),
    (dict(cookie={"domain": "ex\nample.com"}), "domain"),
    (dict(cookie={"domain": ""}), "domain"),
    (dict(cookie={"same_site": "bogus"}), "same_site"),
    (dict(cookie={"same_site": True}), "same_site"),
    (dict(cookie={"priority": "urgent"}), "priority"),
    (dict(cookie={"secure": 1}), "secure"),
    (dict(cookie={"secure": "yes"}), "secure"),
    (dict(cookie={"secure": None}), "secure"),
    (dict(cookie={"same_site": "None"}), "same_site"),
    (dict(cookie={"same_site": "None", "secure": "auto"}), "same_site"),
    (dict(cookie={"partitioned": True}), "partitioned"),
    (dict(cookie={"partitioned": 1, "secure": True}), "partitioned"),
    (dict(cookie={"http_only": 1}), "http_only"),
    (dict(cookie={"max_age": -1}), "max_age"),
    (dict(cookie={"max_age": float("nan")}), "max_age"),
    (dict(cookie={"max_age": float("inf")}), "max_age"),
    (dict(cookie={"max_age": True}), "max_age"),
    (dict(cookie={"max_age": "60"}), "max_age"),
    (dict(cookie={"maxAge": 60}), "maxAge"),
    (dict(cookie="path=/"), "cookie"),
    (dict(name="__Host-sid"), "__Host-"),
    (dict(name="__Host-sid", cookie={"secure": True, "path": "/app"}), "__Host-"),
    (dict(name="__Host-sid", cookie={"secure": True, "domain": "example.com"}), "__Host-"),
    (dict(name="__host-sid", cookie={"secure": "auto"}), "__Host-"),
    (dict(name="__Secure-sid"), "__Secure-"),
    (dict(name="__Secure-sid", cookie={"secure": "auto"}), "__Secure-"),
    (dict(name=""), "name"),
    (dict(name="s id"), "name"),
    (dict(name="sid;"), "name"),
    (dict(name="sid\n"), "name"),
    (dict(name="s\u00efd"), "name"),
    (dict(resave=1), "resave"),
    (dict(save_uninitialized="no"), "save_uninitialized"),
    (dict(rolling=None), "rolling"),
    (dict(trust_proxy=1), "trust_proxy"),
    (dict(genid="abc"), "genid"),
    (dict(absolute_timeout=0), "absolute_timeout"),
    (dict(absolute_timeout=-5), "absolute_timeout"),
    (dict(absolute_timeout="1h"), "absolute_timeout"),
    (dict(clock=5), "clock"),
    (dict(store=object()), "store"),
]


@pytest.mark.parametrize("options, word", BAD_OPTIONS, ids=[f"{w}-{i}" for i, (_, w) in enumerate(BAD_OPTIONS)])
def test_invalid_options_fail_at_construction_naming_the_option(options, word):
    options = dict(options)
    secret = options.pop("secret", SECRET)
    with pytest.raises(sessions.ConfigurationError, match=re.escape(word)):
        sessions.SessionManager(secret, **options)


def test_safe_defaults():
    manager = sessions.SessionManager(SECRET)
    assert (manager.resave, manager.save_uninitialized, manager.rolling, manager.trust_proxy, manager.name) == (
        False, False, False, False, "sid")
    assert manager.cookie_options.same_site == "Lax" and manager.cookie_options.http_only
    with pytest.raises(TypeError):
        sessions.SessionManager()  # the secret is required


def test_configuration_error_is_a_session_error_and_value_error():
    assert issubclass(sessions.ConfigurationError, sessions.SessionError)
    assert issubclass(sessions.ConfigurationError, ValueError)
    with pytest.raises(sessions.ConfigurationError, match="path"):
        sessions.CookieOptions(path="/a;b")


@pytest.mark.parametrize("bad_id", [None, "", 42, "\ud800"])
def test_genid_returning_a_bad_id_is_an_error(bad_id):
    manager = make_manager(genid=lambda: bad_id)
    with pytest.raises(sessions.SessionError, match="genid"):
        manager.open(None)


def test_default_ids_are_32_base64url_characters_of_fresh_randomness():
    manager = make_manager()
    ids = {manager.open(None).id for _ in range(2000)}
    assert len(ids) == 2000  # 192 random bits: a repeat would mean broken randomness
    for sid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", sid), sid
    assert len(set("".join(ids))) == 64  # the whole base64url alphabet shows up


def test_valid_prefixed_names_are_accepted():
    make_manager(name="__Host-sid", cookie={"secure": True})
    make_manager(name="__Secure-sid", cookie={"secure": True, "path": "/app", "domain": "example.com"})


domains = st.from_regex(r"\A\.?[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}\Z")
cookie_options = st.builds(
    dict,
    path=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters=";"),
                 max_size=20).map(lambda p: "/" + p),
    domain=st.none() | domains,
    max_age=st.none() | st.integers(0, 10**8) | st.floats(0, 10**8),
    http_only=st.booleans(),
    secure=st.sampled_from([True, False, "auto"]),
    same_site=st.sampled_from([None, "Strict", "lax", "LAX", "None"]),
    partitioned=st.booleans(),
    priority=st.sampled_from([None, "low", "Medium", "HIGH"]),
)
ATTRIBUTE_ORDER = ["Max-Age", "Domain", "Path", "Expires", "HttpOnly", "Secure", "Partitioned", "Priority", "SameSite"]


@SLOW
@given(options=cookie_options, name=st.from_regex(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}\Z"),
       sid=st.text(min_size=1, max_size=40, alphabet=st.characters(blacklist_categories=("Cs",))),
       secure_request=st.booleans(), destroy=st.booleans())
def test_emitted_set_cookie_values_are_header_safe(options, name, sid, secure_request, destroy):
    if (options["same_site"] or "").lower() == "none" and options["secure"] is not True:
        options["same_site"] = "Lax"
    if options["partitioned"] and options["secure"] is not True:
        options["partitioned"] = False
    assume(not name.lower().startswith(("__host-", "__secure-")))
    manager = make_manager(name=name, cookie=options, genid=ids_from(sid))
    session = manager.open(None, secure=secure_request, path=options["path"])
    session["k"] = "v\r\n; evil=1"
    if destroy:
        session.destroy()
    for value in manager.commit(session):
        assert not re.search(r"[\x00-\x1f\x7f]", value), value
        assert all(ord(c) < 128 for c in value)
        first, *rest = value.split("; ")
        assert first.count(";") == 0 and first.startswith(name + "=")
        seen = [part.split("=", 1)[0] for part in rest]
        assert seen == sorted(seen, key=ATTRIBUTE_ORDER.index), seen  # known attributes, express's order
        assert all(";" not in part for part in rest)
        assert attributes(value)["path"] == options["path"]


# 4. Record format (SPEC 4) ################################################################################


def new_session_record(*, data, **options):
    clock = Clock()
    manager = make_manager(clock, genid=ids_from("apple"), **options)
    session = manager.open(None, secure=True)
    for key, value in data.items():
        session[key] = value
    manager.commit(session)
    return record_of(manager.store.inner, "apple")


def test_record_is_byte_identical_to_express():
    assert new_session_record(data={"views": 1}, cookie={"max_age": 60, "same_site": None}) == (
        '{"cookie":{"originalMaxAge":60000,"expires":"2023-11-14T22:14:20.000Z","httpOnly":true,"path":"/"},"views":1}'
    )


def test_record_without_max_age_matches_express_default():
    assert new_session_record(data={"user": "bob"}, cookie={"same_site": None}) == (
        '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":"bob"}'
    )
    assert new_session_record(data={"user": "bob"}) == (
        '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/","sameSite":"lax"},"user":"bob"}'
    )


def test_record_with_every_attribute_uses_express_key_order():
    assert new_session_record(data={"user": "bob"}, cookie=dict(
        max_age=60, domain="example.com", secure=True, same_site="lax", partitioned=True, priority="high")) == (
        '{"cookie":{"originalMaxAge":60000,"partitioned":true,"priority":"high","expires":"2023-11-14T22:14:20.000Z",'
        '"secure":true,"httpOnly":true,"domain":"example.com","path":"/","sameSite":"lax"},"user":"bob"}'
    )


def test_record_keeps_data_order_unicode_and_js_numbers():
    record = new_session_record(data={"z": 1, "a": [1.5, None, True], "name": "\u00e9\u4e2d\U0001f600", "n": {"b": 2, "a": 1}},
                                cookie={"max_age": 60.5, "same_site": None})
    assert record == (
        '{"cookie":{"originalMaxAge":60500,"expires":"2023-11-14T22:14:20.500Z","httpOnly":true,"path":"/"},'
        '"z":1,"a":[1.5,null,true],"name":"\u00e9\u4e2d\U0001f600","n":{"b":2,"a":1}}'
    )


def load_record(record, clock=None, **options):
    """Open a session whose store holds ``record`` for id ``apple``. The store returns plain text, so the
    record's own ``cookie.expires`` decides (a store returning its deadline would override it)."""
    clock = clock or Clock()
    manager = make_manager(clock, store=RecordingStore(LaxStore()), genid=ids_from("fresh"), **options)
    manager.store.inner.set("apple", record, None)
    return manager.open(f"sid={APPLE_VALUE}")


@pytest.mark.parametrize("expires, expires_ms", [
    ("2023-11-14T22:14:20.000Z", 1700000060000),
    ("2023-11-14T22:14:20Z", 1700000060000),
    ("2023-11-14T22:14:20.5Z", 1700000060500),
    ("2023-11-14T22:14:20.123456Z", 1700000060123),
    ("2023-11-14T22:14:20.000+00:00", 1700000060000),
    ("2023-11-14T23:14:20.000+01:00", 1700000060000),
])
def test_node_records_load_with_any_iso_expires(expires, expires_ms):
    record = json.dumps({"cookie": {"originalMaxAge": 60000, "expires": expires, "secure": False, "httpOnly": True,
                                    "path": "/", "sameSite": "lax"}, "user": "bob", "cart": [1, 2]})
    session = load_record(record)
    assert (session.id, session.is_new, dict(session)) == ("apple", False, {"user": "bob", "cart": [1, 2]})
    assert session.cookie.expires == datetime.fromtimestamp(expires_ms / 1000, timezone.utc)
    assert session.cookie.original_max_age == 60
    assert session.cookie.max_age == pytest.approx((expires_ms / 1000) - T0)
    assert session.cookie.expires.tzinfo is not None


@given(st.integers(0, 253402300799999))  # 1970 to the end of year 9999
def test_iso_timestamps_round_trip_to_the_millisecond(ms):
    text = sessions._iso(ms)
    assert text == datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    assert sessions._parse_iso(text) == ms
    assert sessions._parse_iso(text) == ms  # again, now from the per-minute cache


@pytest.mark.parametrize("text", [
    "2023-11-14T22:14:2\u0663.000Z",  # an Arabic-Indic digit: int() would accept it
    "2023-11-14T22:14:60.000Z", "2023-02-30T00:00:00.000Z", "2023-11-14T24:00:00.000Z",
    "2023-11-14T22:14:20.000", "not a date", "",
])
def test_invalid_iso_timestamps_are_refused(text):
    sessions._parse_iso("2023-11-14T22:14:20.000Z")  # the minute is cached: the fast path must refuse too
    assert sessions._parse_iso(text) is None


def test_offset_timestamps_neither_fail_nor_fill_the_minute_cache():
    assert sessions._parse_iso("2023-11-14T23:14:20.500+01:00") == 1700000060500
    assert sessions._parse_iso("2023-11-14T22:14:20.0+01") in (None, 1699996460000)  # 24 characters, an offset
    assert sessions._parse_iso("2023-11-14T22:14:20.000Z") == 1700000060000
    assert sessions._parse_iso("2023-11-14T22:14:20.000Z") == 1700000060000  # from the cache


def test_node_browser_session_record_loads():
    session = load_record('{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":"bob"}')
    assert (session.id, session["user"], session.cookie.expires, session.cookie.max_age) == ("apple", "bob", None, None)
    assert session.cookie.original_max_age is None


@pytest.mark.parametrize("record", [
    "not json", "", "null", "[]", '"text"', "42", "{}", '{"user":"bob"}', '{"cookie":5}', '{"cookie":"x"}',
    '{"cookie":[]}', '{"cookie":{"expires":"yesterday"}}', '{"cookie":{"expires":12345}}',
    '{"cookie":{"expires":"2023-02-30T00:00:00.000Z"}}', '{"cookie":{"expires":"2023-11-14T22:14:20"}}',
    '{"cookie":{"originalMaxAge":"60000","expires":null}}', '{"cookie":{"originalMaxAge":true,"expires":null}}',
    '{"cookie":{"expires":null},"a":}', '{"cookie":{"expires":null}', '{"cookie":{"expires":"2023-11-14T25:00:00.000Z"}}',
])
def test_corrupt_record_is_treated_as_missing_with_a_warning(record, caplog):
    caplog.set_level(logging.DEBUG, logger="sessions")
    session = load_record(record)
    assert (session.id, session.is_new, dict(session)) == ("fresh", True, {})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert_no_secrets_in_logs(caplog, ["apple", "fresh"])


@pytest.mark.parametrize("cookie, data", [
    ('{"originalMaxAge":null,"expires":null}', '"a":NaN'),
    ('{"originalMaxAge":NaN,"expires":null}', '"a":1'),
    ('{"originalMaxAge":Infinity,"expires":null}', '"a":1'),
    ('{"originalMaxAge":1e308,"expires":null}', '"a":1'),
], ids=["nan-data", "nan-max-age", "infinite-max-age", "huge-max-age"])
def test_record_with_non_finite_numbers_is_treated_as_corrupt(cookie, data, caplog):
    session = load_record('{"cookie":%s,%s}' % (cookie, data))
    assert session.is_new
    session["a"] = 1
    session._manager.commit(session)


def test_deeply_nested_record_is_treated_as_corrupt(caplog):
    session = load_record('{"cookie":{"expires":null},"a":' + "[" * 100_000 + "]" * 100_000 + "}")
    assert session.is_new


def test_non_json_value_raises_naming_the_key_and_keeps_the_record():
    client = Client(make_manager(genid=ids_from("apple")))
    client.request(put("views", 1))
    before = record_of(client.manager.store.inner, "apple")
    session = client.manager.open(client.cookie)
    for key, value in (("bad", object()), ("nan", float("nan")), ("setty", {1, 2}), ("bytes", b"x")):
        with pytest.raises(sessions.SerializationError, match=repr(key)):
            session[key] = value
    with pytest.raises(sessions.SerializationError, match="str"):
        session[1] = "x"
    session["views"] = 2
    session["later"] = []
    session["later"].append(object())  # changed in place: found at save/commit
    with pytest.raises(sessions.SerializationError, match="'later'"):
        session.save()
    with pytest.raises(sessions.SerializationError, match="'later'"):
        client.manager.commit(session)
    assert record_of(client.manager.store.inner, "apple") == before
    assert issubclass(sessions.SerializationError, sessions.SessionError)


@pytest.mark.parametrize("key", ["cookie", sessions.CREATED_KEY])
def test_reserved_keys_are_refused(key):
    session = make_manager().open(None)
    with pytest.raises(sessions.SerializationError, match="reserved"):
        session[key] = 1
    session["nested"] = {"cookie": 1}  # only the top level is reserved
    assert session.modified


def test_record_round_trip_keeps_data_exactly():
    data = {"s": "\u00e9\n\"", "i": 10**20, "f": 0.1, "l": [{"a": None}], "b": False, "e": {}}
    client = Client(make_manager())
    client.request(lambda s: s.update(data))
    session = client.request()
    assert dict(session) == data and list(session) == list(data)
    assert not session.modified


def test_json_encoder_falls_back_to_the_plain_one(monkeypatch):
    # Without the C accelerator (PyPy, some builds) records are still JavaScript's JSON.
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    encode = sessions._json_encoder()
    assert isinstance(getattr(encode, "__self__", None), json.JSONEncoder)  # the plain encoder
    assert encode({"a": [1, 2.5, None, True, "\u00e9\n"], "b": {}}) == '{"a":[1,2.5,null,true,"\u00e9\\n"],"b":{}}'
    with pytest.raises(ValueError):
        encode({"nan": float("nan")})
    with pytest.raises(TypeError):
        encode({"x": object()})


# 5. Session API and save rules (SPEC 5, 6, 9) ###############################################################


def seeded(clock=None, store=None, path="/", **options):
    """A client holding the cookie of a stored session ``{"n": 1}`` (created with a modification)."""
    clock = clock or Clock()
    manager = make_manager(clock, store=store, **options)
    client = Client(manager)
    client.request(increment, path=path)
    assert client.cookie is not None
    manager.store.reset()
    return client


TRUTH_TABLE = [
    (loaded, modified, resave, save_uninitialized, rolling, expires)
    for loaded in (False, True) for modified in (False, True) for resave in (False, True)
    for save_uninitialized in (False, True) for rolling in (False, True) for expires in (False, True)
]


@pytest.mark.parametrize("loaded, modified, resave, save_uninitialized, rolling, expires", TRUTH_TABLE)
def test_save_rules_truth_table(loaded, modified, resave, save_uninitialized, rolling, expires):
    options = dict(resave=resave, save_uninitialized=save_uninitialized, rolling=rolling,
                   cookie={"max_age": 60} if expires else {})
    if loaded:
        client = seeded(**options)
    else:
        client = Client(make_manager(**options))
    session = client.request(increment if modified else None)
    store = client.manager.store
    if loaded:
        expected = (resave or modified, not (resave or modified), rolling or (expires and modified))
    else:
        expected = (save_uninitialized or modified, False, save_uninitialized or modified)
    assert session.is_new is (not loaded)
    actual = (store.count("set") == 1, store.count("touch") == 1, len(client.last_set_cookies) == 1)
    assert actual == expected
    assert store.count("set") + store.count("touch") <= 1 and len(client.last_set_cookies) <= 1
    assert store.count("destroy") == 0


def test_modified_means_json_changed_key_order_included():
    client = seeded()  # stored data: {"n": 1}
    store = client.manager.store

    def same_value(session):
        session["n"] = 1
        assert not session.modified

    client.request(same_value)
    assert store.count("set") == 0 and store.count("touch") == 1

    client.request(put("m", 2))
    store.reset()

    def delete_and_readd(session):
        session["n"] = session.pop("n")
        assert session.modified  # {"m":2,"n":1} != {"n":1,"m":2}

    client.request(delete_and_readd)
    assert store.count("set") == 1
    assert list(client.request()) == ["m", "n"]


@pytest.mark.parametrize("save_first", [False, True], ids=["at-commit", "after-save"])
def test_cookie_only_change_is_saved_and_sent(save_first):
    clock = Clock()
    client = seeded(clock, cookie={"max_age": 60}, genid=ids_from("apple"))

    def remember_me(session):
        session.cookie.max_age = 3600
        assert not session.modified and session.cookie.original_max_age == 3600
        if save_first:
            session.save()

    client.request(remember_me)
    assert client.manager.store.count("set") == 1
    assert client.manager.store.inner.expiry("apple") == T0 + 3600
    [value] = client.last_set_cookies
    assert attributes(value)["max-age"] == "3600"
    assert client.request().cookie.original_max_age == 3600


def test_save_during_request_prevents_the_end_of_request_write():
    client = Client(make_manager())
    store = client.manager.store

    def handler(session):
        session["user"] = "bob"
        session.save()
        assert store.count("set") == 1

    client.request(handler)
    assert store.count("set") == 1 and len(client.last_set_cookies) == 1

    store.reset()
    client.request(handler)  # loaded, resave=False: one write
    assert store.count("set") == 1


def test_changes_after_save_are_written_at_the_end():
    client = Client(make_manager())

    def handler(session):
        session["a"] = 1
        session.save()
        session["b"] = 2

    client.request(handler)
    assert client.manager.store.count("set") == 2
    assert dict(client.request()) == {"a": 1, "b": 2}


def test_explicit_save_of_an_unmodified_new_session_stores_and_sends_the_cookie():
    client = Client(make_manager())
    client.request(lambda s: s.save())
    assert client.manager.store.count("set") == 1 and len(client.last_set_cookies) == 1
    assert not client.request().is_new


def test_regenerate_writes_once_and_the_old_record_is_gone_after_commit():
    client = seeded(genid=ids_from("old", "new"))
    store = client.manager.store

    def login(session):
        session.regenerate()
        assert session.id == "new" and dict(session) == {} and session.is_new
        session["user"] = "bob"
        assert record_of(store.inner, "old") is not None  # deleted at commit, not before

    client.request(login)
    assert record_of(store.inner, "old") is None
    assert [name for name, _ in store.calls if name != "get"] == ["destroy", "set"]  # as express-session does
    assert sid_of(client.last_set_cookies[0]) == "new"
    assert dict(client.request()) == {"user": "bob"}


@pytest.mark.parametrize("save", [False, True])
def test_regenerate_whose_old_record_cannot_be_deleted_stores_no_second_record(save):
    client = seeded(genid=ids_from("old", "new"))
    store = client.manager.store
    store.fail.add("destroy")

    def login(session):
        session.regenerate()
        session["user"] = "bob"
        if save:
            session.save()

    with pytest.raises(sessions.StoreError):
        client.request(login)
    assert store.inner.ids() == ["old"]  # the new record was not written: its cookie is never sent


def test_regenerate_then_save_writes_once():
    client = seeded(genid=ids_from("old", "new"))

    def login(session):
        session.regenerate()
        session["user"] = "bob"
        session.save()

    client.request(login)
    assert client.manager.store.count("set") == 1
    assert record_of(client.manager.store.inner, "old") is None


def test_regenerate_keep_data():
    client = seeded(genid=ids_from("old", "new"))

    def login(session):
        session.regenerate(keep_data=True)
        assert (session.id, dict(session)) == ("new", {"n": 1})

    client.request(login)  # saved although the data did not change: the id did
    assert client.manager.store.count("set") == 1
    assert record_of(client.manager.store.inner, "old") is None
    session = client.request()
    assert (session.id, dict(session)) == ("new", {"n": 1})


def test_regenerate_of_a_new_session_is_saved():
    client = Client(make_manager(genid=ids_from("a", "b")))
    client.request(lambda s: s.regenerate())
    assert client.manager.store.count("set") == 1 and client.manager.store.count("destroy") == 0
    assert sid_of(client.last_set_cookies[0]) == "b"


def test_destroy_removes_the_record_and_expires_the_cookie():
    client = seeded(genid=ids_from("apple"), cookie={"max_age": 60, "path": "/app", "domain": "example.com"},
                    path="/app")
    assert record_of(client.manager.store.inner, "apple") is not None

    def logout(session):
        session.destroy()
        assert record_of(client.manager.store.inner, "apple") is None  # at once
        assert dict(session) == {}
        with pytest.raises(sessions.SessionClosedError, match="destroyed"):
            session["x"] = 1

    client.request(logout, path="/app/logout")
    [value] = client.last_set_cookies
    assert value == ("sid=; Max-Age=0; Domain=example.com; Path=/app; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
                     "HttpOnly; SameSite=Lax")
    assert client.manager.store.count("set") == client.manager.store.count("touch") == 0


def test_destroy_then_regenerate_starts_a_fresh_session():
    client = seeded(genid=ids_from("old", "new"))

    def handler(session):
        session.destroy()
        session.regenerate()
        session["fresh"] = True

    client.request(handler)
    assert sid_of(client.last_set_cookies[0]) == "new"
    assert record_of(client.manager.store.inner, "old") is None
    assert dict(client.request()) == {"fresh": True}


def test_reload_replaces_data_with_the_stored_record():
    client = seeded(genid=ids_from("apple", "other"))
    session = client.manager.open(client.cookie)
    other = client.manager.open(client.cookie)
    other["n"] = 5
    client.manager.commit(other)
    session["scratch"] = 1
    session.reload()
    assert dict(session) == {"n": 5}
    with pytest.raises(sessions.SessionNotFoundError):
        client.manager.open(None).reload()


def test_unknown_or_expired_id_is_never_adopted():
    clock = Clock()
    manager = make_manager(clock, cookie={"max_age": 60}, genid=ids_from("apple", "fresh1", "fresh2"))
    session = manager.open(cookie_header_for("attacker-chosen"))
    assert session.is_new and session.id == "apple"
    session["n"] = 1
    cookie = request_cookie(manager.commit(session)[0])
    clock.advance(60)
    session = manager.open(cookie)
    assert (session.id, session.is_new) == ("fresh1", True)
    session["n"] = 2
    manager.commit(session)
    assert record_of(manager.store.inner, "apple") is None


@pytest.mark.parametrize("first", ["garbage", "s%3Aapple.bad", "stale", "corrupt"])
def test_duplicate_cookies_first_that_verifies_and_loads_wins(first, caplog):
    manager = make_manager(genid=ids_from("apple", "stale", "corrupt", "other", "new"))
    Client(manager).request(put("user", "bob"))
    manager.store.inner.set("corrupt", "not json", None)
    first_value = {"stale": cookie_header_for("stale"), "corrupt": cookie_header_for("corrupt")}.get(first, f"sid={first}")
    session = manager.open(f"{first_value}; sid={APPLE_VALUE}")
    assert (session.id, session["user"]) == ("apple", "bob")
    session = manager.open([first_value, f"sid={APPLE_VALUE}"])
    assert session.id == "apple"


def test_duplicate_valid_cookies_the_first_wins():
    manager = make_manager(genid=ids_from("a", "b"))
    Client(manager).request(put("who", "a"))
    Client(manager).request(put("who", "b"))
    assert manager.open(f"{cookie_header_for('b')}; {cookie_header_for('a')}")["who"] == "b"


def test_secret_rotation_loads_old_cookies_and_resigns_them():
    clock = Clock()
    store = RecordingStore(sessions.MemoryStore(clock=clock))
    old = Client(make_manager(clock, store=store, secret="old secret", genid=ids_from("apple")))
    old.request(put("user", "bob"))
    rotated = Client(make_manager(clock, store=store, secret=["new secret", "old secret"]), cookie=old.cookie)
    session = rotated.request()
    assert (session.id, session["user"]) == ("apple", "bob")
    [value] = rotated.last_set_cookies  # browser-session cookie, unmodified, not rolling: still re-signed
    assert request_cookie(value) == cookie_header_for("apple", "new secret")
    rotated.request()
    assert rotated.last_set_cookies == []  # once re-signed, the usual rules apply
    retired = Client(make_manager(clock, store=store, secret="new secret"), cookie=rotated.cookie)
    assert retired.request().id == "apple"


def test_5xx_response_saves_nothing_new():
    client = Client(make_manager())
    client.request(put("a", 1), status=500)
    assert client.manager.store.calls == [] and client.last_set_cookies == []

    client = seeded(genid=ids_from("apple"), cookie={"max_age": 60}, rolling=True)
    before = record_of(client.manager.store.inner, "apple")
    client.request(increment, status=503)
    assert record_of(client.manager.store.inner, "apple") == before
    assert [name for name, _ in client.manager.store.calls] == ["get"]
    assert client.last_set_cookies == []


def test_5xx_response_keeps_what_save_stored():
    client = Client(make_manager(genid=ids_from("apple")))

    def handler(session):
        session["a"] = 1
        session.save()
        session["b"] = 2  # lost with the failed request

    client.request(handler, status=500)
    assert len(client.last_set_cookies) == 1  # the saved session must stay reachable
    assert json.loads(record_of(client.manager.store.inner, "apple"))["a"] == 1
    assert dict(client.request()) == {"a": 1}

    client.request(handler, status=500)  # loaded session: the save stays too
    assert dict(client.request()) == {"a": 1}


LATE_WRITES = {
    "setitem": lambda s: s.__setitem__("x", 1),
    "delitem": lambda s: s.__delitem__("n"),
    "pop": lambda s: s.pop("n"),
    "update": lambda s: s.update(x=1),
    "clear": lambda s: s.clear(),
    "save": lambda s: s.save(),
    "reload": lambda s: s.reload(),
    "regenerate": lambda s: s.regenerate(),
    "destroy": lambda s: s.destroy(),
    "touch": lambda s: s.touch(),
    "cookie.max_age": lambda s: setattr(s.cookie, "max_age", 10),
}


@pytest.mark.parametrize("operation", LATE_WRITES.values(), ids=LATE_WRITES.keys())
def test_writes_after_commit_raise(operation):
    client = seeded()
    session = client.manager.open(client.cookie)
    client.manager.commit(session)
    assert session.closed
    with pytest.raises(sessions.SessionClosedError, match="response"):
        operation(session)
    assert session["n"] == 1  # reads still work
    assert client.manager.store.count("set") == 0 and client.manager.store.count("destroy") == 0


def test_commit_twice_returns_the_same_cookies_and_writes_once():
    manager = make_manager()
    session = manager.open(None)
    session["a"] = 1
    first = manager.commit(session)
    assert manager.commit(session) == first and len(first) == 1
    assert manager.store.count("set") == 1


def test_absolute_timeout_ends_an_active_session():
    clock = Clock()
    client = seeded(clock, cookie={"max_age": 60}, absolute_timeout=timedelta(seconds=150), rolling=True)
    first_id = sid_of(client.cookie)
    for _ in range(2):  # active every 50 s: the idle timeout never fires
        clock.advance(50)
        assert not client.request(increment).is_new
    clock.advance(40)  # 140 s: the cookie and the record are capped at creation + 150 s
    client.request(increment)
    assert attributes(client.last_set_cookies[0])["max-age"] == "10"
    clock.advance(10)
    session = client.request()
    assert session.is_new and session.id != first_id


def test_absolute_timeout_without_max_age_expires_the_record():
    clock = Clock()
    client = seeded(clock, absolute_timeout=100, genid=ids_from("apple", "next"))
    assert client.manager.store.inner.expiry("apple") == T0 + 100
    clock.advance(99.999)
    assert not client.request().is_new
    clock.advance(0.001)
    assert client.request().is_new


@pytest.mark.parametrize("reload", [False, True])
def test_absolute_timeout_ends_a_session_whose_record_had_no_creation_time_even_if_only_read(reload):
    clock = Clock()
    before = seeded(clock, cookie={"max_age": 3600})  # stored before absolute_timeout was enabled
    assert sessions.CREATED_KEY not in record_of(before.manager.store, sid_of(before.cookie))
    client = Client(make_manager(clock, store=before.manager.store, cookie={"max_age": 3600},
                                 absolute_timeout=100), before.cookie)
    for _ in range(2):  # read every 60 s: the first read starts the clock, and stores it, once
        session = client.request(sessions.Session.reload if reload else None)
        assert dict(session) == {"n": 1} and not session.is_new
        clock.advance(60)
    assert client.manager.store.count("set") == 1  # Store.update: a get and a set
    assert client.request().is_new  # 120 s after the first read


def test_absolute_timeout_restarts_on_regenerate():
    clock = Clock()
    client = seeded(clock, absolute_timeout=100, genid=ids_from("a", "b"))
    clock.advance(90)
    client.request(lambda s: s.regenerate(keep_data=True))
    clock.advance(90)
    session = client.request()
    assert (session.id, session.is_new, dict(session)) == ("b", False, {"n": 1})


@pytest.mark.parametrize("cookie_path, request_path, in_scope", [
    ("/", "/", True), ("/", "/anything/deep", True), ("/admin", "/admin", True), ("/admin", "/admin/", True),
    ("/admin", "/admin/users", True), ("/admin", "/administrator", False), ("/admin", "/", False),
    ("/admin", "/Admin", False), ("/admin/", "/admin/x", True), ("/admin/", "/admin", False), ("/admin", "", False),
])
def test_cookie_path_matches_by_segment(cookie_path, request_path, in_scope):
    client = seeded(cookie={"path": cookie_path}, path=cookie_path, genid=ids_from("apple", "other"))
    session = client.manager.open(client.cookie, path=request_path)
    assert (session.get("n") == 1) is in_scope
    if in_scope:
        return
    with pytest.raises(sessions.SessionClosedError, match="path"):
        session["x"] = 1
    assert client.manager.commit(session) == []
    assert client.manager.store.count("set") == client.manager.store.count("touch") == 0


@pytest.mark.parametrize("secure_request", [False, True])
def test_secure_auto_follows_the_request(secure_request):
    client = Client(make_manager(cookie={"secure": "auto"}, genid=ids_from("apple")))
    client.request(put("a", 1), secure=secure_request)
    [value] = client.last_set_cookies
    assert ("secure" in attributes(value)) is secure_request
    assert json.loads(record_of(client.manager.store.inner, "apple"))["cookie"]["secure"] is secure_request


def test_secure_cookie_is_withheld_on_plain_http_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="sessions")
    client = Client(make_manager(cookie={"secure": True}))
    for _ in range(3):
        client.request(put("a", 1))
        assert client.last_set_cookies == []
    assert len([r for r in caplog.records if "Secure" in r.getMessage()]) == 1
    client.request(put("a", 1), secure=True)
    assert "secure" in attributes(client.last_set_cookies[0])


def test_a_new_session_whose_secure_cookie_is_withheld_is_not_stored():
    client = Client(make_manager(cookie={"secure": True}))
    client.request(put("a", 1))  # plain HTTP: the cookie cannot be sent, so the record would be an orphan
    assert client.last_set_cookies == [] and len(client.manager.store.inner) == 0
    client.request(put("a", 1), secure=True)
    assert client.last_set_cookies and len(client.manager.store.inner) == 1


def test_is_secure_honours_x_forwarded_proto_only_when_trusted():
    trusting, wary = make_manager(trust_proxy=True), make_manager()
    assert trusting.is_secure(False, "https") and trusting.is_secure(False, " HTTPS , http")
    assert not trusting.is_secure(False, "http, https") and not trusting.is_secure(False, None)
    assert not wary.is_secure(False, "https") and wary.is_secure(True, None)


def test_response_headers_add_vary_and_cache_control():
    manager = make_manager()
    session = manager.open(None)
    assert manager.response_headers(session) == [("Vary", "Cookie")]
    session = manager.open(None)
    session["a"] = 1
    headers = manager.response_headers(session)
    assert [name for name, _ in headers] == ["Set-Cookie", "Cache-Control", "Vary"]
    assert ("Cache-Control", 'no-cache="Set-Cookie"') in headers
    lazy = manager.open_lazy(lambda: pytest.fail("a session nobody used must not be opened"))
    assert manager.response_headers(lazy) == [] and not lazy.opened


def test_session_mapping_and_state():
    manager = make_manager(genid=ids_from("apple"), cookie={"max_age": 60})
    session = manager.open(None)
    assert (session.id, session.is_new, session.modified, len(session), "x" in session) == ("apple", True, False, 0, False)
    session["x"] = [1]
    assert session.modified and "x" in session and list(session) == ["x"] and session.get("y") is None
    assert "apple" not in repr(session) and "apple" not in repr(session.cookie)
    assert (session.cookie.path, session.cookie.http_only, session.cookie.same_site, session.cookie.secure) == (
        "/", True, "Lax", False)
    assert session.cookie.original_max_age == 60 and session.cookie.max_age == 60


def test_store_failures_become_store_errors():
    class Broken(sessions.Store):
        def get(self, sid):
            raise OSError("down")

        def set(self, sid, record, expires):
            raise OSError("down")

        def destroy(self, sid):
            raise OSError("down")

    manager = make_manager(store=Broken())
    with pytest.raises(sessions.StoreError) as info:
        manager.open(cookie_header_for("apple"))
    assert isinstance(info.value.original, OSError)
    session = manager.open(None)
    session["a"] = 1
    with pytest.raises(sessions.StoreError):
        manager.commit(session)


def test_a_failed_commit_closes_the_session_and_a_repeat_stores_nothing():
    client = seeded(genid=ids_from("apple", "next"))
    session = client.manager.open(client.cookie)
    session.regenerate()  # the old record is deleted at commit
    session["a"] = 1
    client.manager.store.fail = {"set"}
    with pytest.raises(sessions.StoreError):
        client.manager.commit(session)
    with pytest.raises(sessions.SessionClosedError, match="committed"):
        session["b"] = 2
    client.manager.store.fail = set()
    assert client.manager.commit(session) == []  # no cookie for a session that was not stored
    assert [name for name, _ in client.manager.store.calls if name != "get"] == ["destroy", "set"]
    assert client.manager.store.inner.ids() == []  # the old record went first, as in express-session


def seeded_concurrent():
    client = seeded(genid=ids_from("apple", "next"))
    first, second = (client.manager.open(client.cookie) for _ in range(2))
    return client, first, second


def test_touch_does_not_resurrect_a_destroyed_session():
    client, reader, logout = seeded_concurrent()
    logout.destroy()
    client.manager.commit(logout)
    client.manager.commit(reader)  # unmodified: touch
    assert record_of(client.manager.store.inner, "apple") is None


def test_touch_does_not_overwrite_a_concurrent_write():
    client, reader, writer = seeded_concurrent()
    writer["n"] = 2
    client.manager.commit(writer)
    client.manager.commit(reader)  # unmodified: touch
    assert json.loads(record_of(client.manager.store.inner, "apple"))["n"] == 2


# 5b. Core additions: modified setter, flush(), new_reason #################################################


def test_setting_modified_forces_a_save_of_an_unchanged_session():
    client = seeded(genid=ids_from("apple"), cookie={"max_age": 60})

    def force(session):
        assert not session.modified
        session.modified = True
        assert session.modified

    client.request(force)
    assert client.manager.store.count("set") == 1 and client.manager.store.count("touch") == 0
    assert len(client.last_set_cookies) == 1  # a modified session with an expiry is sent, as in SPEC 5


def test_setting_modified_false_clears_the_force_but_not_data_changes():
    client = seeded(genid=ids_from("apple"))

    def unforce(session):
        session.modified = True
        session.modified = False
        assert not session.modified

    client.request(unforce)
    assert client.manager.store.count("set") == 0 and client.manager.store.count("touch") == 1

    def change_then_unforce(session):
        session["n"] = 2
        session.modified = False
        assert session.modified  # the data changed: that still counts

    client.request(change_then_unforce)
    assert client.manager.store.count("set") == 1


def test_forcing_modified_after_save_writes_again_at_commit():
    client = seeded(genid=ids_from("apple"))

    def handler(session):
        session.save()
        session.modified = True

    client.request(handler)
    assert client.manager.store.count("set") == 2


def test_forcing_a_new_session_stores_it_and_sends_its_cookie():
    client = Client(make_manager(genid=ids_from("apple")))
    client.request(lambda s: setattr(s, "modified", True))
    assert client.manager.store.count("set") == 1 and sid_of(client.last_set_cookies[0]) == "apple"


def test_setting_modified_on_a_committed_session_raises():
    client = seeded(genid=ids_from("apple"))
    session = client.request()
    with pytest.raises(sessions.SessionClosedError, match="committed"):
        session.modified = True


def test_flush_deletes_the_record_at_once_and_a_value_written_after_is_saved_under_a_new_id():
    client = seeded(genid=ids_from("old", "new"))
    store = client.manager.store

    def handler(session):
        session.flush()
        assert record_of(store.inner, "old") is None  # at once
        assert (session.id, dict(session), session.is_new, session.new_reason) == ("new", {}, True, "regenerated")
        assert not session.modified
        session["flash"] = "logged out"

    client.request(handler)
    [value] = client.last_set_cookies
    assert sid_of(value) == "new" and attributes(value).get("max-age") != "0"
    assert [name for name, _ in store.calls if name != "get"] == ["destroy", "set"]
    assert store.data("new") == {"flash": "logged out"}
    assert dict(client.request()) == {"flash": "logged out"}
    assert record_of(store.inner, "old") is None


def test_flush_with_nothing_written_after_expires_the_browser_cookie():
    client = seeded(genid=ids_from("old", "new"), cookie={"path": "/", "domain": "example.com"})
    store = client.manager.store
    client.request(lambda s: s.flush())
    [value] = client.last_set_cookies
    assert value.startswith("sid=; Max-Age=0; Domain=example.com; Path=/;")
    assert store.count("set") == store.count("touch") == 0
    assert record_of(store.inner, "old") is None and record_of(store.inner, "new") is None
    assert client.cookie is None


def test_the_flushed_id_never_comes_back():
    client = seeded(genid=ids_from("old", "new", "newer"))
    old_cookie = client.cookie
    client.request(lambda s: (s.flush(), s.update(x=1)))
    stale = client.manager.open(old_cookie)  # the browser (or a thief) replays the old cookie
    assert stale.is_new and stale.new_reason == "not-found" and stale.id == "newer"
    stale["y"] = 2
    client.manager.commit(stale)
    assert record_of(client.manager.store.inner, "old") is None


def test_flush_after_regenerate_deletes_both_and_after_destroy_starts_afresh():
    client = seeded(genid=ids_from("old", "mid", "new", "last"))

    def handler(session):
        session.regenerate()
        session.save()  # "mid" is stored now
        session.flush()
        assert record_of(client.manager.store.inner, "old") is None
        assert record_of(client.manager.store.inner, "mid") is None
        session.destroy()
        session.flush()  # a destroyed session may be flushed, like regenerate()
        session["a"] = 1

    client.request(handler)
    assert dict(client.request()) == {"a": 1}


def test_flush_on_a_committed_session_raises():
    client = seeded(genid=ids_from("apple"))
    session = client.request()
    with pytest.raises(sessions.SessionClosedError):
        session.flush()


def test_new_reason_names_why_a_session_is_new():
    clock = Clock()
    manager = make_manager(clock, genid=ids_from(*(f"id{i}" for i in range(20))),
                           cookie={"max_age": 60, "path": "/app"})
    assert manager.open(None, path="/app").new_reason == "no-cookie"
    assert manager.open("other=1", path="/app").new_reason == "no-cookie"
    assert manager.open(cookie_header_for("apple", "wrong secret"), path="/app").new_reason == "bad-signature"
    assert manager.open("sid=unsigned", path="/app").new_reason == "bad-signature"
    assert manager.open(cookie_header_for("apple"), path="/app").new_reason == "not-found"
    assert manager.open(cookie_header_for("apple"), path="/elsewhere").new_reason == "out-of-scope"
    seeded_session = manager.open(None, path="/app")
    seeded_session["n"] = 1
    manager.commit(seeded_session)
    loaded = manager.open(cookie_header_for(seeded_session.id), path="/app")
    assert (loaded.is_new, loaded.new_reason) == (False, None)
    loaded.regenerate()
    assert loaded.new_reason == "regenerated"
    bad_then_missing = f"sid=garbage; {cookie_header_for('missing')}"
    assert manager.open(bad_then_missing, path="/app").new_reason == "not-found"
    clock.advance(61)
    assert manager.open(cookie_header_for(seeded_session.id), path="/app").new_reason == "not-found"  # expired


# 6. Expiry (SPEC 5, 8) ######################################################################################

def iso_ms(ms):
    """JavaScript's Date#toISOString."""
    return datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


steps = st.lists(st.tuples(st.integers(0, 90_000), st.booleans()), min_size=1, max_size=12)


@SLOW
@given(steps=steps, max_age=st.integers(1, 60), lax=st.booleans(), rolling=st.booleans())
def test_session_lives_until_its_sliding_expiry(steps, max_age, lax, rolling):
    """Live iff now < expires; each commit slides the stored expiry to now + max_age; the browser cookie's
    Max-Age/Expires, when sent, say the same as the store."""
    clock = Clock()
    store = LaxStore() if lax else sessions.MemoryStore(clock=clock)
    manager = make_manager(clock, store=store, cookie={"max_age": max_age}, rolling=rolling)
    client = Client(manager)
    client.request(increment)
    expires_ms = int(T0 * 1000) + max_age * 1000
    for advance_ms, modify in steps:
        now_ms = round(clock.now * 1000) + advance_ms
        clock.now = now_ms / 1000
        session = client.request(increment if modify else None)
        assert session.is_new is not (now_ms < expires_ms)
        if session.is_new and not modify:
            assert client.last_set_cookies == []
            continue
        expires_ms = now_ms + max_age * 1000
        assert session.cookie.expires == datetime.fromtimestamp(expires_ms / 1000, timezone.utc)
        if not lax:
            assert store.expiry(session.id) == expires_ms / 1000
        record = json.loads(record_of(store, session.id))
        assert record["cookie"]["expires"] == iso_ms(expires_ms)
        assert record["cookie"]["originalMaxAge"] == max_age * 1000
        if client.last_set_cookies:
            attrs = attributes(client.last_set_cookies[0])
            assert int(attrs["max-age"]) == max_age
            assert attrs["expires"] == formatdate(expires_ms // 1000, usegmt=True)
        else:
            assert not rolling and not session.is_new and not modify


@SLOW
@given(steps=steps, max_age=st.integers(1, 60), absolute=st.integers(1, 200))
def test_absolute_timeout_caps_every_expiry(steps, max_age, absolute):
    clock = Clock()
    manager = make_manager(clock, cookie={"max_age": max_age}, absolute_timeout=absolute, rolling=True)
    client = Client(manager)
    client.request(increment)
    created_ms = int(T0 * 1000)
    for advance_ms, modify in steps:
        clock.advance(advance_ms / 1000)
        session = client.request(increment if modify else None)
        if session.is_new:
            if modify:
                created_ms = int(clock.now * 1000)
            continue
        now_ms = int(clock.now * 1000)
        assert now_ms < created_ms + absolute * 1000
        cap = min(now_ms + max_age * 1000, created_ms + absolute * 1000)
        assert session.cookie.expires == datetime.fromtimestamp(cap / 1000, timezone.utc)
        assert manager.store.inner.expiry(session.id) == pytest.approx(cap / 1000)


@pytest.mark.parametrize("max_age", [sessions.MAX_DURATION + 1, 1e12, 1e300])
def test_absurd_max_age_is_refused_at_construction(max_age):
    with pytest.raises(sessions.ConfigurationError, match="max_age"):
        sessions.CookieOptions(max_age=max_age)
    with pytest.raises(sessions.ConfigurationError, match="absolute_timeout"):
        make_manager(absolute_timeout=max_age)


def test_longest_max_age_round_trips():
    client = seeded(cookie={"max_age": sessions.MAX_DURATION})
    session = client.request()
    assert not session.is_new and session.cookie.original_max_age == sessions.MAX_DURATION


actions = st.sampled_from(["read", "write", "save-write", "regenerate", "regenerate-keep", "destroy",
                            "destroy-regenerate"])


@SLOW
@given(st.lists(st.tuples(st.integers(0, 70_000), actions, st.integers(0, 3)), min_size=1, max_size=15))
def test_request_sequences_match_a_model(requests):
    """Any sequence of requests: the client sees exactly the data a simple model of the save rules predicts,
    and the store holds exactly one live record (the client's) or none."""
    clock = Clock()
    manager = make_manager(clock, cookie={"max_age": 60})
    client = Client(manager)
    model, expires_ms, live_sid = None, None, None  # what the store holds for the client's id
    for advance_ms, action, value in requests:
        clock.now = (round(clock.now * 1000) + advance_ms) / 1000
        now_ms = round(clock.now * 1000)
        live = model is not None and now_ms < expires_ms

        def handler(session):
            assert session.is_new is not live
            assert dict(session) == (model if live else {})
            if action.startswith("destroy"):
                session.destroy()
            if action.endswith("regenerate") or action == "regenerate-keep":
                session.regenerate(keep_data=action == "regenerate-keep")
            if action == "save-write":
                session.save()
            if "write" in action:
                session[f"k{value}"] = value

        session = client.request(handler)
        data = dict(session)
        if action == "destroy":
            model, live_sid = None, None
            assert client.cookie is None
        elif live or data or "regenerate" in action or action == "save-write":
            model, expires_ms, live_sid = data, now_ms + 60_000, session.id
            assert client.cookie is not None and sid_of(client.cookie) == session.id
        stored = [sid for sid in manager.store.ids() if record_of(manager.store, sid) is not None]
        if model is not None and now_ms < expires_ms:
            assert stored == [live_sid]
            assert json.loads(record_of(manager.store, live_sid))["cookie"]["expires"] == iso_ms(expires_ms)
        else:
            assert stored == []


def test_remaining_max_age_is_reported_during_a_request():
    clock = Clock()
    client = seeded(clock, cookie={"max_age": 60})
    clock.advance(30)
    session = client.manager.open(client.cookie)
    assert session.cookie.max_age == 30 and session.cookie.original_max_age == 60


def test_unmodified_request_slides_store_but_not_browser_expiry():
    clock = Clock()
    client = seeded(clock, cookie={"max_age": 60}, genid=ids_from("apple"))
    clock.advance(10)
    client.request()
    assert client.last_set_cookies == []
    assert client.manager.store.inner.expiry("apple") == T0 + 70
    assert json.loads(record_of(client.manager.store.inner, "apple"))["cookie"]["expires"] == "2023-11-14T22:14:30.000Z"


class DeadlineStore(LaxStore):
    """Returns ``(record, expires_at)`` with a deadline the test sets: the store is the authority on expiry
    (like Redis with its TTL, where connect-redis's touch leaves ``cookie.expires`` stale)."""

    def __init__(self, expires_at) -> None:
        super().__init__()
        self.expires_at = expires_at

    def get(self, sid):
        record = self.records.get(sid)
        return None if record is None else (record, self.expires_at)


def stale_record(expires: str = "2023-11-14T22:13:00.000Z") -> str:
    """A record whose own cookie.expires (20 s before T0) has passed."""
    return '{"cookie":{"originalMaxAge":60000,"expires":"%s","httpOnly":true,"path":"/"},"n":1}' % expires


def test_a_store_deadline_in_the_future_wins_over_a_stale_cookie_expires():
    store = DeadlineStore(T0 + 30)
    store.set("apple", stale_record(), None)
    session = make_manager(store=store, genid=ids_from("fresh")).open(f"sid={APPLE_VALUE}")
    assert (session.id, session.is_new, dict(session)) == ("apple", False, {"n": 1})
    assert session.cookie.expires == datetime.fromtimestamp(T0 + 30, timezone.utc)


def test_a_store_deadline_that_has_passed_means_missing_whatever_cookie_expires_says():
    store = DeadlineStore(T0 - 1)
    store.set("apple", stale_record("2023-11-14T23:00:00.000Z"), None)  # the record claims to be live
    session = make_manager(store=store, genid=ids_from("fresh")).open(f"sid={APPLE_VALUE}")
    assert (session.id, session.new_reason) == ("fresh", "not-found")


def test_a_store_without_a_deadline_is_trusted_and_keeps_the_record_expiry():
    store = DeadlineStore(None)
    store.set("apple", stale_record(), None)
    session = make_manager(store=store, genid=ids_from("fresh")).open(f"sid={APPLE_VALUE}")
    assert session.id == "apple" and session.cookie.expires == datetime(2023, 11, 14, 22, 13, tzinfo=timezone.utc)


def test_a_browser_session_record_keeps_no_expiry_under_a_store_deadline():
    store = DeadlineStore(T0 + 30)
    store.set("apple", '{"cookie":{"originalMaxAge":null,"expires":null,"path":"/"},"n":1}', None)
    session = make_manager(store=store).open(f"sid={APPLE_VALUE}")
    assert session.id == "apple" and session.cookie.expires is None


@pytest.mark.parametrize("expires_at", ["soon", float("nan"), float("inf")])
def test_a_store_deadline_that_is_not_a_time_is_a_store_error(expires_at):
    store = DeadlineStore(expires_at)
    store.set("apple", stale_record(), None)
    with pytest.raises(sessions.StoreError):
        make_manager(store=store).open(f"sid={APPLE_VALUE}")


def test_under_a_store_deadline_the_record_expires_text_is_not_read_but_must_be_text():
    for expires, loads in (('"2023-02-30T00:00:00.000Z"', True), ("12345", False), ("[]", False)):
        store = DeadlineStore(T0 + 30)
        store.set("apple", '{"cookie":{"originalMaxAge":60000,"expires":%s,"path":"/"},"n":1}' % expires, None)
        session = make_manager(store=store, genid=ids_from("fresh")).open(f"sid={APPLE_VALUE}")
        assert (session.id == "apple") is loads, expires
    store = DeadlineStore(None)  # no deadline: the record's expires is read, and must be a time
    store.set("apple", '{"cookie":{"originalMaxAge":60000,"expires":"2023-02-30T00:00:00.000Z"},"n":1}', None)
    assert make_manager(store=store).open(f"sid={APPLE_VALUE}").new_reason == "not-found"


def test_a_plain_text_store_with_a_stale_cookie_expires_does_not_load():
    store = LaxStore()
    store.set("apple", stale_record(), None)
    session = make_manager(store=store, genid=ids_from("fresh")).open(f"sid={APPLE_VALUE}")
    assert (session.id, session.new_reason) == ("fresh", "not-found")


def test_memory_store_get_returns_the_record_and_its_deadline():
    store = sessions.MemoryStore(clock=Clock(), default_ttl=100)
    store.set("a", "rec", T0 + 5)
    store.set("b", "rec", None)
    assert store.get("a") == ("rec", T0 + 5) and store.get("b") == ("rec", T0 + 100)


def test_blocking_says_whether_a_store_would_block_an_event_loop():
    assert sessions.Store.blocking is True and sessions.MemoryStore.blocking is False
    assert LaxStore.blocking is True  # a subclass inherits the safe default


# 7. MemoryStore (SPEC 8); the conformance suite every store passes is in test_stores.py ###############


def rec(data=1, max_age_ms=None):
    """A session record as the manager writes it (stores may parse it, e.g. to touch)."""
    return ('{"cookie":{"originalMaxAge":%s,"expires":null,"httpOnly":true,"path":"/"},"v":%s}'
            % ("null" if max_age_ms is None else max_age_ms, json.dumps(data)))


class TestMemoryStore:
    def test_browser_session_records_get_the_default_ttl(self, clock):
        store = sessions.MemoryStore(clock=clock, default_ttl=timedelta(hours=1))
        store.set("a", rec(), None)
        assert store.expiry("a") == T0 + 3600
        clock.advance(3599)
        store.touch("a", rec(), None)  # activity restarts it
        clock.advance(3599)
        assert record_of(store, "a") == rec()
        clock.advance(1)
        assert record_of(store, "a") is None

    def test_default_ttl_is_one_day(self, clock):
        store = sessions.MemoryStore(clock=clock)
        store.set("a", rec(), None)
        assert store.expiry("a") == T0 + 86400

    def test_prune_removes_only_expired_records(self, clock):
        store = sessions.MemoryStore(clock=clock)
        for i in range(10):
            store.set(f"s{i}", rec(), T0 + i + 1)
        store.set("s3", rec(), T0 + 100)  # rewritten: its old heap entry is stale
        clock.advance(5)
        assert store.prune() == 4  # s0, s1, s2, s4
        assert sorted(store.ids()) == sorted(["s3"] + [f"s{i}" for i in range(5, 10)])
        assert store.prune() == 0

    def test_a_write_prunes_a_bounded_batch_of_expired_records(self, clock):
        store = sessions.MemoryStore(clock=clock)
        for i in range(1000):
            store.set(f"dead{i}", rec(), T0 + 1)
        for i in range(5000):
            store.set(f"live{i}", rec(), T0 + 1000)
        clock.advance(2)
        entries = store._entries  # white-box: index entries examined by this one write
        store.set("new", rec(), T0 + 1000)
        examined = entries + 1 - store._entries
        batch = store.PRUNE_BATCH
        assert 0 < examined <= batch  # proportional to the expired, not to the 6000 stored
        still_held = sum(store.expiry(f"dead{i}") is not None for i in range(1000))
        assert 1000 - batch <= still_held < 1000
        assert all(store.expiry(f"live{i}") == T0 + 1000 for i in range(5000))
        assert store.prune() == still_held
        assert len(store) == 5001

    def test_max_sessions_evicts_the_closest_to_expiry(self, clock):
        store = sessions.MemoryStore(clock=clock, max_sessions=3)
        store.set("late", rec(), T0 + 300)
        store.set("early", rec(), T0 + 100)
        store.set("middle", rec(), T0 + 200)
        store.set("late", rec(), T0 + 400)  # replacing a held id evicts nothing
        assert len(store) == 3
        store.set("new", rec(), T0 + 50)
        assert sorted(store.ids()) == ["late", "middle", "new"]
        store.touch("middle", rec(), T0 + 500)
        store.set("newer", rec(), T0 + 250)
        assert sorted(store.ids()) == ["late", "middle", "newer"]

    def test_a_full_store_drops_records_expired_this_second_before_evicting_live_ones(self, clock):
        store = sessions.MemoryStore(clock=clock, max_sessions=2)
        store.set("dead", rec(), T0 + 10.2)
        store.set("live", rec(), T0 + 10.9)  # same expiry second as "dead"
        clock.advance(10.5)  # "dead" has expired, its second is still under way
        store.set("new", rec(), T0 + 100)
        assert sorted(store.ids()) == ["live", "new"]

    def test_an_expired_write_evicts_nobody(self, clock):
        store = sessions.MemoryStore(clock=clock, max_sessions=1)
        store.set("live", rec(), T0 + 30)
        store.set("other", rec(), T0)  # already expired: stores nothing
        assert record_of(store, "live") == rec()

    @pytest.mark.parametrize("options", [dict(max_sessions=0), dict(max_sessions=True), dict(max_sessions=1.5),
                                         dict(default_ttl=0), dict(default_ttl=-1), dict(default_ttl="1d")])
    def test_invalid_options(self, options):
        with pytest.raises(sessions.ConfigurationError, match=next(iter(options))):
            sessions.MemoryStore(**options)

    def test_is_the_managers_default_store(self):
        assert isinstance(sessions.SessionManager(SECRET).store, sessions.MemoryStore)

    def test_index_stays_bounded_under_rewrites(self, clock):  # white-box: memory stays linear in live records
        store = sessions.MemoryStore(clock=clock)
        for i in range(20_000):
            store.set("same", rec(), T0 + 60 + i)
        assert store._entries <= 2 * len(store._records) + 1025

    def test_thread_safety(self, clock):
        store = sessions.MemoryStore(clock=clock, max_sessions=10_000)
        errors = []

        def worker(n):
            try:
                for i in range(300):
                    store.set(f"{n}-{i}", f"r{n}-{i}", T0 + 60)
                    store.set("shared", f"r{n}", T0 + 60)
                    assert record_of(store, f"{n}-{i}") == f"r{n}-{i}"
                    assert record_of(store, "shared") is not None
                    if i % 3 == 0:
                        store.destroy(f"{n}-{i}")
                    len(store)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        expected = {f"{n}-{i}" for n in range(8) for i in range(300) if i % 3} | {"shared"}
        assert set(store.ids()) == expected and len(store) == len(expected)
        assert all(record_of(store, sid) == f"r{sid}" for sid in expected - {"shared"})


class MemoryStoreModel(RuleBasedStateMachine):
    """MemoryStore against a dict model: expiry, default TTL, touch, pruning and max_sessions eviction."""

    ids = st.sampled_from(["a", "b", "c", "d", "e"])

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.tick = 0
        self.max_sessions = None
        self.store = sessions.MemoryStore(clock=self.clock, default_ttl=30)
        self.model = {}  # sid -> ((cookie tag, data tag), deadline)

    @initialize(max_sessions=st.none() | st.integers(1, 4))
    def configure(self, max_sessions):
        self.max_sessions = max_sessions
        self.store = sessions.MemoryStore(clock=self.clock, default_ttl=30, max_sessions=max_sessions)

    def _drop_expired(self):
        self.model = {sid: entry for sid, entry in self.model.items() if entry[1] > self.clock.now}

    @rule(sid=ids, ttl=st.none() | st.integers(-5, 60), touch=st.booleans())
    def write(self, sid, ttl, touch):
        self.tick += 1
        self.clock.advance(1 / 1024)
        expires = None if ttl is None else self.clock.now + ttl
        deadline = self.clock.now + 30 if expires is None else expires
        self._drop_expired()
        (self.store.touch if touch else self.store.set)(sid, rec(self.tick, self.tick), expires)
        if touch:
            if sid in self.model:
                tags = (self.tick, self.model[sid][0][1])
                if deadline > self.clock.now:
                    self.model[sid] = (tags, deadline)
                else:
                    del self.model[sid]
            return
        if deadline <= self.clock.now:
            self.model.pop(sid, None)
            return
        if self.max_sessions is not None and sid not in self.model and len(self.model) >= self.max_sessions:
            # One record of the earliest expiry second is evicted (the store is exact to the second).
            earliest = min(int(entry[1]) for entry in self.model.values())
            candidates = [k for k, entry in self.model.items() if int(entry[1]) == earliest]
            evicted = [k for k in candidates if self.store.expiry(k) is None]
            assert len(evicted) == 1, (candidates, evicted)
            del self.model[evicted[0]]
        self.model[sid] = ((self.tick, self.tick), deadline)

    @rule(sid=ids)
    def destroy(self, sid):
        self.store.destroy(sid)
        self.model.pop(sid, None)

    @rule(seconds=st.integers(0, 40))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def prune(self):
        before = set(self.model)
        self._drop_expired()
        assert self.store.prune() <= len(before - set(self.model))

    @invariant()
    def agrees(self):
        self._drop_expired()
        for sid in "abcde":
            entry = self.model.get(sid)
            expected = None if entry is None else json.loads(rec(entry[0][1], entry[0][0]))
            stored = record_of(self.store, sid)
            assert (None if stored is None else json.loads(stored)) == expected, sid
        assert sorted(self.store.ids()) == sorted(self.model) and len(self.store) == len(self.model)


TestMemoryStoreModel = MemoryStoreModel.TestCase
TestMemoryStoreModel.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


def test_manager_sessions_in_threads():
    clock = Clock()
    manager = make_manager(clock, store=sessions.MemoryStore(clock=clock))
    cookies = []

    def worker():
        client = Client(manager)
        for _ in range(50):
            client.request(increment)
        cookies.append(client.cookie)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(cookies)) == 6
    assert all(manager.open(cookie)["n"] == 50 for cookie in cookies)


# 8. Logging (SPEC 7) ######################################################################################


def assert_no_secrets_in_logs(caplog, needles):
    for record in caplog.records:
        text = record.getMessage() + (caplog.text if record.exc_info else "")
        for needle in needles:
            assert needle not in text, (needle, text)


def test_logs_never_contain_session_ids_or_secrets(caplog):
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    secret = "s3cr3t-never-logged"
    sids = ["idAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "idBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", "idCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
            "idDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD", "idEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE", "idFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            "idGGGGGGGGGGGGGGGGGGGGGGGGGGGGGG", "idHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH"]
    manager = make_manager(clock, secret=[secret, "older-secret-xyz"], cookie={"max_age": 60, "secure": True},
                           genid=ids_from(*sids), absolute_timeout=1000)
    client = Client(manager)
    client.request(increment, secure=True)
    good = client.cookie
    manager.open(good + "x")  # tampered
    manager.open("sid=" + sids[0])  # unsigned
    manager.open(cookie_header_for("unknownIDunknownIDunknownID", secret))  # not stored
    manager.store.inner.set("corruptIDcorruptIDcorruptID", "{bad", None)
    manager.open(cookie_header_for("corruptIDcorruptIDcorruptID", secret))
    manager.open("sid=" + "x" * 20_000)
    Client(manager, cookie=good).request(put("a", 1))  # Secure cookie withheld on HTTP: a warning
    client.request(lambda s: s.regenerate(), secure=True)
    client.request(lambda s: s.destroy(), secure=True)
    clock.advance(61)
    manager.open(good)  # expired
    assert len(caplog.records) >= 6
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert_no_secrets_in_logs(caplog, [*sids, secret, "older-secret-xyz", "unknownIDunknownIDunknownID",
                                       "corruptIDcorruptIDcorruptID", APPLE_VALUE])


# 9. Shape (SPEC 1) ########################################################################################


def test_sessions_imports_only_the_standard_library():
    tree = ast.parse(Path(sessions.__file__).read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            modules.add(node.module.split(".")[0])
    outside = {name for name in modules if not _is_standard_library(name)}
    assert modules and not outside, outside


def _is_standard_library(name):
    if hasattr(sys, "stdlib_module_names"):  # Python 3.10+
        return name in sys.stdlib_module_names or name == "__future__"
    spec = importlib.util.find_spec(name)  # Python 3.9: where it is installed tells
    if spec.origin in ("built-in", "frozen"):
        return True
    stdlib = sysconfig.get_paths()["stdlib"]
    return spec.origin.startswith(stdlib) and "site-packages" not in spec.origin


def test_the_file_describes_itself():
    assert re.fullmatch(r"\d+\.\d+\.\d+", sessions.__version__)
    assert sessions.__license__ == "MIT"
    assert (Path(sessions.__file__).parent / "LICENSE").read_text().startswith("MIT License")
    for name in ("get", "set", "touch", "destroy", "clear", "__len__", "ids"):
        assert getattr(sessions.Store, name).__doc__, name


@pytest.mark.parametrize("method, args", [("get", ("x",)), ("set", ("x", "{}", None)), ("destroy", ("x",))])
def test_store_methods_that_must_be_overridden_say_so(method, args):
    class Incomplete(sessions.Store):
        pass

    with pytest.raises(NotImplementedError, match=f"Incomplete must implement {method}"):
        getattr(Incomplete(), method)(*args)


def test_public_names_exist():
    for name in sessions.__all__:
        assert hasattr(sessions, name), name
    for error in ("ConfigurationError", "SessionClosedError", "SessionNotFoundError", "SerializationError", "StoreError"):
        assert issubclass(getattr(sessions, error), sessions.SessionError)


# 9. The session is a dict (issue 15, item 1) ##############################################################

DICT_KEYS = st.sampled_from(["a", "b", "c", "d"])
DICT_VALUES = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.lists(st.integers(0, 3), max_size=2))
DICT_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("setitem"), DICT_KEYS, DICT_VALUES),
        st.tuples(st.just("delitem"), DICT_KEYS),
        st.tuples(st.just("pop"), DICT_KEYS),
        st.tuples(st.just("pop_default"), DICT_KEYS, DICT_VALUES),
        st.tuples(st.just("popitem")),
        st.tuples(st.just("setdefault"), DICT_KEYS, DICT_VALUES),
        st.tuples(st.just("update"), st.dictionaries(DICT_KEYS, DICT_VALUES, max_size=3)),
        st.tuples(st.just("update_pairs"), st.lists(st.tuples(DICT_KEYS, DICT_VALUES), max_size=3)),
        st.tuples(st.just("update_kwargs"), st.dictionaries(DICT_KEYS, DICT_VALUES, max_size=2)),
        st.tuples(st.just("ior"), st.dictionaries(DICT_KEYS, DICT_VALUES, max_size=3)),
        st.tuples(st.just("clear")),
        st.tuples(st.just("get"), DICT_KEYS),
    ),
    max_size=12,
)


def _apply(target, operation):
    """One dict operation on ``target``: (what it returned, or the exception type it raised)."""
    name, *args = operation
    try:
        if name == "setitem":
            target[args[0]] = args[1]
            return None
        if name == "delitem":
            del target[args[0]]
            return None
        if name == "pop":
            return target.pop(args[0])
        if name == "pop_default":
            return target.pop(*args)
        if name == "update_pairs":
            return target.update(args[0])
        if name == "update_kwargs":
            return target.update(**args[0])
        if name == "ior":
            target |= args[0]
            return None
        return getattr(target, name)(*args)
    except KeyError as exc:
        return KeyError, exc.args


@SLOW
@given(start=st.dictionaries(DICT_KEYS, DICT_VALUES, max_size=4), operations=DICT_OPERATIONS)
def test_a_session_behaves_as_a_dict_and_stores_exactly_what_the_dict_holds(start, operations):
    clock = Clock()
    manager = make_manager(clock)
    client = Client(manager)
    client.request(lambda s: s.update(start, seeded=True))
    model = dict(manager.open(client.cookie))
    session = manager.open(client.cookie)
    for operation in operations:
        assert _apply(session, operation) == _apply(model, operation), operation
        assert list(session.items()) == list(model.items())
    assert isinstance(session, dict)
    assert json.dumps(session) == json.dumps(model)
    assert session == model and model == session and not (session != model)
    assert list(reversed(session)) == list(reversed(model))
    assert (session | {"z": 1}) == (model | {"z": 1}) and ({"z": 1} | session) == ({"z": 1} | model)
    assert type(session | {}) is dict and type(session.copy()) is dict and session.copy() == model
    manager.commit(session)
    assert dict(manager.open(client.cookie)) == model  # what was stored is exactly what the dict held


def test_popitem_removes_the_last_key_and_the_store_keeps_the_others():
    client = Client(make_manager())
    client.request(lambda s: s.update(first=1, second=2, last=3))
    session = client.request(lambda s: s.popitem())
    assert client.manager.store.data(session.id) == {"first": 1, "second": 2}


def test_json_and_the_dict_protocol_see_a_lazy_session_once_it_is_read():
    client = Client(make_manager())
    client.request(put("views", 3))
    for read in (dict, lambda s: {**s}, lambda s: s | {}, lambda s: {} | s, list, len, bool,
                 lambda s: s == {"views": 3}, lambda s: {"views": 3} == s, lambda s: json.dumps(s.copy())):
        session = client.manager.open_lazy(lambda: (client.cookie, False, "/"))
        assert not session.opened
        assert read(session) in ({"views": 3}, ["views"], 1, True, '{"views": 3}')
        assert session.opened and session.accessed


@pytest.mark.parametrize("change", [
    lambda s: s.update({"ok": 1, "bad": object()}),
    lambda s: s.update([("ok", 1), ("bad", {1, 2})]),
    lambda s: s.__ior__({"ok": 1, "bad": float("nan")}),
    lambda s: s.setdefault("bad", object()),
    lambda s: s.update({"cookie": 1}),
    lambda s: s.update({1: "not a str key"}),
])
def test_a_refused_value_changes_nothing_even_among_good_ones(change):
    client = Client(make_manager())
    client.request(put("kept", 1))
    session = client.manager.open(client.cookie)
    with pytest.raises(sessions.SerializationError):
        change(session)
    assert session == {"kept": 1} and not session.modified


def POP_N(session):
    return session.pop("n")


@pytest.mark.parametrize("change", [
    lambda s: s.popitem(), POP_N, lambda s: s.setdefault("new", 1), lambda s: s.update(n=2),
    lambda s: s.__ior__({"n": 2}), lambda s: s.clear(), lambda s: s.__delitem__("n"), lambda s: s.__setitem__("n", 2),
])
@pytest.mark.parametrize("end", ["commit", "destroy"])
def test_every_dict_write_after_the_commit_or_a_destroy_raises(change, end):
    client = seeded()
    session = client.manager.open(client.cookie)
    if end == "commit":
        client.manager.commit(session)
    else:
        session.destroy()  # empties the dict: popping "n" then fails as on any dict without the key
    with pytest.raises(KeyError if end == "destroy" and change is POP_N else sessions.SessionClosedError):
        change(session)


def test_no_op_reads_and_pops_of_missing_keys_do_not_raise_after_the_commit():
    client = seeded()
    session = client.manager.open(client.cookie)
    client.manager.commit(session)
    assert session.pop("missing", None) is None and session.get("n") == 1 and session.setdefault("n") == 1
    session.update()  # nothing to write


def test_an_update_to_equal_values_is_not_a_modification():
    client = seeded()
    client.manager.store.reset()
    session = client.request(lambda s: s.__ior__({"n": 1}))
    assert not session.modified
    assert client.manager.store.count("touch") == 1 and client.manager.store.count("update") == 0


def test_accessed_says_whether_the_application_used_the_session():
    client = seeded()
    manager, store = client.manager, client.manager.store
    store.reset()
    unused = manager.open_lazy(lambda: (client.cookie, False, "/"))
    assert not unused.accessed and manager.response_headers(unused) == [] and store.calls == []
    preloaded = manager.open_lazy(lambda: (client.cookie, False, "/"))
    preloaded._preload()  # what ASGISessionMiddleware does for a request with the cookie
    assert preloaded.opened and not preloaded.accessed
    assert manager.response_headers(preloaded) == [] and store.count("touch") == 0  # unused: no touch, no Vary
    used = manager.open_lazy(lambda: (client.cookie, False, "/"))
    used.get("n")
    assert used.accessed and manager.response_headers(used) == [("Vary", "Cookie")] and store.count("touch") == 1
    assert manager.open(client.cookie).accessed  # opened by the caller: in use


def test_a_session_cannot_be_pickled_or_copied_as_a_session():
    import copy
    import pickle

    session = seeded().request(increment)
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(sessions.SerializationError, match="dict"):
            attempt(session)
    assert copy.deepcopy(dict(session)) == {"n": 2}


# 10. Codecs: values JSON has no type for (issue 15, item 3) ##############################################


class TupleCodec:
    """Tuples as ``{" t": [...]}`` (Flask's tag), everything else as JSON."""

    def encode(self, value):
        if isinstance(value, tuple):
            return {" t": [self.encode(item) for item in value]}
        if isinstance(value, list):
            return [self.encode(item) for item in value]
        if isinstance(value, dict):
            return {key: self.encode(item) for key, item in value.items()}
        return value

    def decode(self, value):
        if isinstance(value, dict):
            if list(value) == [" t"]:
                return tuple(self.decode(item) for item in value[" t"])
            return {key: self.decode(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.decode(item) for item in value]
        return value


TAGGABLE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=3).filter(lambda k: k != " t"), inner, max_size=3)),
    max_leaves=8,
)


@SLOW
@given(value=TAGGABLE)
def test_a_codec_brings_values_back_with_their_types(value):
    client = Client(make_manager(codec=TupleCodec()))
    client.request(put("value", value))
    back = client.manager.open(client.cookie)["value"]
    assert sessions._same_value(back, value)


def test_the_record_holds_the_codec_form_as_json():
    client = Client(make_manager(codec=TupleCodec()))
    session = client.request(put("pair", (1, "a")))
    assert json.loads(record_of(client.manager.store, session.id))["pair"] == {" t": [1, "a"]}
    client.manager.store.reset()
    client.request(lambda s: s["pair"])  # unchanged: compared in the codec's form, so only a touch
    assert client.manager.store.count("touch") == 1 and client.manager.store.count("update") == 0


@pytest.mark.parametrize("value", [{1, 2}, ["ok", {1}], object()])
def test_a_value_the_codec_cannot_encode_is_refused_at_assignment(value):
    session = make_manager(codec=TupleCodec()).open(None)
    with pytest.raises(sessions.SerializationError, match="'bad'"):
        session["bad"] = value
    assert "bad" not in session


def test_a_value_that_would_come_back_changed_is_refused_at_assignment():
    class Text(str):
        pass

    session = make_manager(codec=TupleCodec()).open(None)
    for value in (Text("markup"), {"inner": Text("x")}, {1: "int key"}):
        with pytest.raises(sessions.SerializationError, match="would not load back"):
            session["changed"] = value
    session["fine"] = ("a", ["b"], {"c": (1,)})
    assert session == {"fine": ("a", ["b"], {"c": (1,)})}


def test_without_a_codec_values_are_plain_json_as_express_stores_them():
    client = Client(make_manager())
    client.request(put("pair", (1, 2)))
    assert client.manager.open(client.cookie)["pair"] == [1, 2]


def test_a_record_the_codec_cannot_decode_is_treated_as_missing(caplog):
    class Strict(TupleCodec):
        def decode(self, value):
            if value == "poison":
                raise ValueError("cannot decode")
            return super().decode(value)

    writer = Client(make_manager())  # e.g. an Express app sharing the store
    writer.request(put("value", "poison"))
    reader = make_manager(store=writer.manager.store, codec=Strict())
    with caplog.at_level(logging.WARNING, logger="sessions"):
        session = reader.open(writer.cookie)
    assert session.new_reason == "not-found" and "codec cannot decode" in caplog.text


def test_concurrent_requests_merge_codec_values_key_by_key():
    client = Client(make_manager(codec=TupleCodec()))
    client.request(lambda s: s.update(a=(1,), b=(2,)))
    first, second = client.manager.open(client.cookie), client.manager.open(client.cookie)
    first["a"] = (10, 11)
    second["b"] = (20,)
    client.manager.commit(first)
    client.manager.commit(second)
    assert dict(client.manager.open(client.cookie)) == {"a": (10, 11), "b": (20,)}


def test_a_codec_needs_encode_and_decode():
    with pytest.raises(sessions.ConfigurationError, match="codec"):
        make_manager(codec=object())


def test_a_whole_float_comes_back_as_the_equal_int_through_a_codec():
    client = Client(make_manager(codec=TupleCodec()))
    client.request(lambda s: s.update(price=10.0, pair=(1.0, 2.5)))
    back = client.manager.open(client.cookie)
    assert back == {"price": 10, "pair": (1, 2.5)} and type(back["price"]) is int
