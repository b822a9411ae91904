"""Only ``SessionError`` subclasses leave the library, whatever the input (SPEC 9.16, issue 10 item 3).

Each red-team finding has a test here that failed before its fix; the property tests at the end feed
generated data, headers and options through the public API and accept only a result or a SessionError.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socketserver
import struct
import subprocess
import sys
import threading
import time
import traceback
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessions
from conftest import CAMPAIGN_TALLY, require_binary

#: How much bigger the campaign is under the current Hypothesis profile (1 by default, 40 under
#: ``--hypothesis-profile=campaign``): example counts, faulty requests and floods all scale by it.
SCALE = max(1, settings().max_examples // 100)


def fuzz(examples: int):
    """Settings for a property test of ``examples`` inputs by default, scaled by the profile."""
    return settings(max_examples=examples * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def tally(name: str, count: int = 1) -> None:
    CAMPAIGN_TALLY[name] = CAMPAIGN_TALLY.get(name, 0) + count

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


@pytest.mark.parametrize("make_store", [sessions.MemoryStore, TextStore])
@pytest.mark.parametrize("data", ['"half":"\\ud83d"', '"half":{"k":["a\\uDE00"]}',
                                  '"deep":' + "[" * sessions.MAX_DEPTH + "1" + "]" * sessions.MAX_DEPTH],
                         ids=["lone-surrogate", "lone-surrogate-nested", "too-deep"])
def test_a_record_that_could_not_be_written_back_is_treated_as_missing_and_logged(make_store, data, caplog):
    store = make_store()  # Node wrote it: JSON.stringify escapes half an emoji, and nests as deep as it likes
    manager = sessions.SessionManager(SECRET, store=store, absolute_timeout=3600, cookie_refresh=0.5)
    stored(store, "abc", '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},'
                         + data + ',"n":1}')
    with caplog.at_level("WARNING", logger="sessions"):
        session = manager.open(cookie_for("abc"))
    assert session.new_reason == "not-found" and "n" not in session
    session["n"] = 2
    assert manager.commit(session)  # a fresh session under a new id, stored as usual
    assert any(r.levelname == "WARNING" and sessions._sid_hash("abc") in r.getMessage() for r in caplog.records)
    assert "abc" not in caplog.text.replace(sessions._sid_hash("abc"), "")


def test_an_escaped_surrogate_pair_still_loads():
    store = TextStore()
    manager = sessions.SessionManager(SECRET, store=store)
    stored(store, "abc", '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},'
                         '"smile":"\\ud83d\\ude00"}')
    session = manager.open(cookie_for("abc"))
    assert session["smile"] == "\U0001F600"
    session["n"] = 1
    manager.commit(session)
    assert manager.open(cookie_for("abc"))["smile"] == "\U0001F600"


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


@pytest.mark.parametrize("key", ["\ud800", 10**5000, -(10**5000), None, ("a",)], ids=["surrogate", "int", "-int",
                                                                                   "None", "tuple"])
def test_a_key_that_is_not_text_is_refused(key):
    session = sessions.SessionManager(SECRET).open(None)
    with pytest.raises(sessions.SerializationError):
        session[key] = 1


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


@fuzz(300)
@given(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("cookie", "__createdAt")),
                       json_values, max_size=5))
def test_every_committed_record_is_utf8_json_that_loads_back_to_the_same_session(data):
    tally("inputs: session data")
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


@fuzz(200)
@given(st.text(max_size=60))
def test_open_never_raises_on_any_cookie_header(text):
    tally("inputs: Cookie headers")
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
    lambda: sessions.CookieOptions(max_age=10**5000),
    lambda: sessions.CookieOptions(secure=10**5000),
    lambda: sessions.SessionManager(SECRET, name=10**5000),
    lambda: sessions.SessionManager(SECRET, rolling=-(10**5000)),
    lambda: sessions.MemoryStore(max_sessions=-(10**5000)),
    lambda: sessions.SessionManager(SECRET, cookie_refresh=10**5000),
], ids=lambda make: "")
def test_impossible_options_are_configuration_errors(make):
    with pytest.raises(sessions.ConfigurationError):
        make()


def test_a_refused_value_names_its_key_shortened():
    session = sessions.SessionManager(SECRET).open(None)
    with pytest.raises(sessions.SerializationError) as info:
        session["k" * 10_000] = object()
    assert len(str(info.value)) < 200 and "'kkk" in str(info.value)


@pytest.mark.parametrize("value", [HUGE, -1, float("inf"), "60", True])
def test_the_cookie_max_age_setter_refuses_bad_values_with_a_configuration_error(value):
    session = sessions.SessionManager(SECRET).open(None)
    with pytest.raises(sessions.ConfigurationError):
        session.cookie.max_age = value


option_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-HUGE, max_value=HUGE), st.sampled_from([10**5000, -(10**5000)]),
    st.floats(), st.text(max_size=8),
    st.binary(max_size=4), st.lists(st.integers(), max_size=2), st.timedeltas(),
)


@fuzz(300)
@given(st.dictionaries(st.sampled_from(["max_age", "path", "domain", "secure", "same_site", "http_only",
                                        "partitioned", "priority"]), option_values, max_size=4),
       st.dictionaries(st.sampled_from(["resave", "rolling", "save_uninitialized", "absolute_timeout",
                                        "trust_proxy", "name"]), option_values, max_size=3),
       option_values)
def test_any_options_give_a_manager_or_a_configuration_error(cookie, options, secret):
    tally("inputs: options")
    try:
        sessions.SessionManager(SECRET if secret is None else secret, cookie=cookie, **options)
    except sessions.ConfigurationError:
        pass
    try:
        sessions.MemoryStore(default_ttl=cookie.get("max_age", 60), max_sessions=options.get("name"))
    except sessions.ConfigurationError:
        pass



@fuzz(300)
@given(st.text(max_size=80) | st.builds(lambda data: json.dumps(data), json_values)
       | st.builds(lambda inner: '{"cookie":{' + inner + '},"n":1}', st.text(max_size=40)))
def test_open_treats_any_stored_record_as_a_session_or_missing(record):
    tally("inputs: stored records")
    for store in (sessions.MemoryStore(), TextStore()):
        stored(store, "abc", record)
        manager = sessions.SessionManager(SECRET, store=store, absolute_timeout=3600)
        session = manager.open(cookie_for("abc"))
        manager.commit(session)


environ_values = (st.none() | st.text(max_size=20) | st.binary(max_size=8) | st.integers()
                  | st.lists(st.text(max_size=5), max_size=2))


@fuzz(300)
@given(st.dictionaries(st.sampled_from(["HTTP_COOKIE", "RAW_URI", "REQUEST_URI", "PATH_INFO", "SCRIPT_NAME",
                                        "wsgi.url_scheme", "HTTP_X_FORWARDED_PROTO"]), environ_values),
       st.sampled_from(["200 OK", "302 Found", "500 Oops", "nonsense", ""]), st.booleans())
def test_the_wsgi_middleware_takes_any_environ(environ, status, write):
    tally("inputs: WSGI environs")
    manager = sessions.SessionManager(SECRET, trust_proxy=True)

    def app(env, start_response):
        session = env["sessions.session"]
        if write:
            session["n"] = 1
        start_response(status, [])
        return [b"ok"]

    started = []
    try:
        body = sessions.SessionMiddleware(app, manager)(dict(environ), lambda *args: started.append(args))
    except sessions.SessionError:  # e.g. a write on a path outside the cookie's: refused, as it must be
        return
    assert list(body) == [b"ok"] and len(started) == 1


# Numbers: JavaScript's Number#toString ####################################################################


def number_to_string(x: float) -> str:
    """A second model of ECMA-262 Number::toString, from the decimal value of Python's shortest repr (the
    same digits JavaScript picks): k digits s, exponent n with x = s * 10**(n - k)."""
    if x == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(abs(x))).normalize().as_tuple()
    s = "".join(map(str, digits))
    k = len(s)
    n = exponent + k
    if k <= n <= 21:
        text = s + "0" * (n - k)
    elif 0 < n <= 21:
        text = s[:n] + "." + s[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + s
    else:
        e = n - 1
        text = (s if k == 1 else s[0] + "." + s[1:]) + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return ("-" if x < 0 else "") + text


@pytest.mark.parametrize("x, text", [(1.0, "1"), (1e16, "10000000000000000"), (5e-7, "5e-7"), (-0.0, "0"),
                                     (1e-5, "0.00001"), (1e21, "1e+21"), (1e-7, "1e-7"), (1.5e300, "1.5e+300"),
                                     (123456789.125, "123456789.125"), (2.5e20, "250000000000000000000"),
                                     (5e-324, "5e-324"), (-1.7976931348623157e308, "-1.7976931348623157e+308")])
def test_floats_are_written_as_javascript_writes_them(x, text):
    assert sessions._encode_json(x) == text == number_to_string(x)
    assert sessions._encode_json({"a": [x, "v1.0"]}) == '{"a":[' + text + ',"v1.0"]}'


@fuzz(1000)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_matches_the_model_of_number_to_string(x):
    tally("inputs: floats (model)")
    assert sessions._encode_json([x]) == f"[{number_to_string(x)}]"
    assert float(sessions._encode_json(x)) == x


def test_float_text_matches_node_for_a_random_batch():
    """One node process formats a batch of floats (random bit patterns and the edges of every range)."""
    node = require_binary("node")
    rng = random.Random(20261201)
    count = 5000 * SCALE
    values = []
    while len(values) < count:
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if x == x and abs(x) != float("inf"):
            values.append(x)
    for e in range(-10, 25):
        values += [10.0**e, -(10.0**e), 1.5 * 10.0**e, 10.0**e * (1 - 2**-52)]
    values += [rng.uniform(-1e6, 1e6) for _ in range(count // 5)] + [float(rng.getrandbits(60)) for _ in range(200)]
    tally("inputs: floats (node)", len(values))
    script = ("let s='';process.stdin.on('data',d=>s+=d)"
              ".on('end',()=>process.stdout.write(JSON.stringify(JSON.parse(s))))")
    node_text = subprocess.run([node, "-e", script], input=json.dumps(values), capture_output=True, text=True,
                               timeout=60, check=True).stdout
    assert sessions._encode_json(values) == node_text


def random_json(rng: random.Random, depth: int = 0):
    """A random JSON value without what JavaScript reads differently by design (ints beyond 2**53, integer-like
    keys, which it orders first; README "Known differences")."""
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randrange(-(2**53) + 1, 2**53)
    if kind == 2:
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        return x if x == x and abs(x) != float("inf") else 0.5
    if kind == 3:
        return rng.choice([1.0, -0.0, 1e16, 5e-7, 1e21, 1e-7, 0.1, 123456789.125, rng.uniform(-1e3, 1e3)])
    if kind in (4, 5):
        alphabet = "ab\"\\\n\t\x00\x1f\x7f\u2028\u00e9\U0001f600"
        return "".join(rng.choice(alphabet) if rng.random() < 0.7 else chr(rng.choice([rng.randrange(0x20, 0xD800),
                       rng.randrange(0xE000, 0x110000)])) for _ in range(rng.randrange(8)))
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["k", "é", "a b", "\U0001f600"]) + str(i): random_json(rng, depth + 1)
            for i in range(rng.randrange(4))}


def test_records_are_what_node_json_stringify_writes_for_them():
    """A batch of random sessions, committed; one node process re-serialises each record (JSON.stringify of
    JSON.parse): every record comes back byte for byte."""
    node = require_binary("node")
    rng = random.Random(42)
    manager = sessions.SessionManager(SECRET, cookie={"max_age": 60})
    records = []
    for _ in range(300 * SCALE):
        session = manager.open(None)
        for index in range(1 + rng.randrange(4)):
            session[f"key{index}"] = random_json(rng)
        manager.commit(session)
        records.append(manager.store.get(session.id)[0])
    script = ("let s='';process.stdin.on('data',d=>s+=d).on('end',()=>process.stdout.write("
              "JSON.stringify(JSON.parse(s).map(r=>JSON.stringify(JSON.parse(r))))))")
    again = subprocess.run([node, "-e", script], input=json.dumps(records), capture_output=True, text=True,
                           timeout=120, check=True).stdout
    assert json.loads(again) == records
    tally("inputs: records checked by node", len(records))


# Fault injection: a store failing or stalling at random, on every call, under real servers ################

FAULTS = (OSError("connection reset"), TimeoutError("timed out"), RuntimeError("store bug"), ValueError("bad reply"))


class FaultyStore(sessions.Store):
    """Wraps a store; each call may stall a little, fail before reaching it, or fail after it took effect
    (a lost reply). A failure is an exception of a random type, often ``KeyError(sid)``: its text holds the
    live id, which must reach no response, log line or exception chain."""

    def __init__(self, inner: sessions.Store, seed: int, rate: float) -> None:
        self.inner, self.rate = inner, rate
        self.blocking = getattr(inner, "blocking", True)
        self._rng, self._lock = random.Random(seed), threading.Lock()
        self.calls = self.faults = self.stalls = 0
        self.ids_seen = set()

    def _fault(self, sid: str):
        with self._lock:
            self.calls += 1
            self.ids_seen.add(sid)
            roll, stall = self._rng.random(), self._rng.random() < self.rate / 2
            when = "before" if roll < self.rate / 2 else "after" if roll < self.rate else None
            error = KeyError(sid) if self._rng.random() < 0.5 else self._rng.choice(FAULTS)
            self.faults += when is not None
            self.stalls += stall
        if stall:
            time.sleep(self._rng.random() / 500)  # up to 2 ms: requests overlap differently
        return when, error

    def _call(self, method: str, sid: str, *args):
        when, error = self._fault(sid)
        if when == "before":
            raise error
        result = getattr(self.inner, method)(sid, *args)
        if when == "after":
            raise error
        return result

    def get(self, sid):
        return self._call("get", sid)

    def set(self, sid, record, expires):
        self._call("set", sid, record, expires)

    def touch(self, sid, record, expires):
        self._call("touch", sid, record, expires)

    def destroy(self, sid):
        self._call("destroy", sid)


def site(session: sessions.Session, path: str):
    """The application of both servers: (status, body); the store writes happen at commit."""
    if path == "/destroy":
        session.destroy()
        return 200, "bye"
    if path == "/read":  # no change: a loaded session is touched
        return 200, str(session.get("n", 0))
    if path == "/regenerate":
        session.regenerate(keep_data=True)
    session["n"] = session.get("n", 0) + 1
    return 200, str(session["n"])


class MixinHandler(sessions.SessionHandlerMixin, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    catch_errors = False  # True: the application catches the commit's error itself (the demo's old trap)

    def do_GET(self):
        status, body = site(self.session, self.path)
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
        except sessions.SessionError:
            if not self.catch_errors:
                raise
            self.send_error(503)  # too late: the mixin has answered; this is discarded
            return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Servers:
    """A real http.server (the mixin) or wsgiref (the middleware) on 127.0.0.1, collecting what each would
    print to its error log."""

    def __init__(self, kind: str, manager: sessions.SessionManager, catch_errors: bool = False) -> None:
        self.errors = []
        sink = self
        if kind == "mixin":
            handler = type("Handler", (MixinHandler,), {"session_manager": manager, "catch_errors": catch_errors})

            class Server(ThreadingHTTPServer):
                daemon_threads = False  # server_close() joins the handler threads: their errors are all in

                def handle_error(self, request, client_address):
                    sink.errors.append(traceback.format_exc())

            self.server = Server(("127.0.0.1", 0), handler)
        else:
            def app(environ, start_response):
                status, body = site(environ["sessions.session"], environ["PATH_INFO"])
                start_response(f"{status} OK", [("Content-Length", str(len(body)))])
                return [body.encode()]

            class Quiet(WSGIRequestHandler):
                def log_message(self, *args):
                    pass

                def get_stderr(self):
                    return sink

            class Server(socketserver.ThreadingMixIn, WSGIServer):
                daemon_threads = False

            self.server = Server(("127.0.0.1", 0), Quiet)
            self.server.set_app(sessions.SessionMiddleware(app, manager))
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01})
        self.thread.start()

    def write(self, text):  # wsgiref's error stream
        self.errors.append(text)

    def flush(self):
        pass

    def get(self, path: str, cookie=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
            response = conn.getresponse()
            return response.status, response.read().decode(), response.headers.get_all("Set-Cookie") or []
        finally:
            conn.close()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=30)


class Visitor:
    """A client that knows what the server may hold for it: ``possible`` is the set of values of ``n`` its
    session's record may have (0: no record), given which requests failed."""

    def __init__(self) -> None:
        self.cookie = None
        self.possible = {0}
        self.answered = 0

    def visit(self, servers: Servers, path: str) -> None:
        status, body, set_cookies = servers.get(path, self.cookie)
        self.answered += 1
        if status == 500:  # a clean 500: no cookie, and the store holds the old state or the new one
            assert set_cookies == [] and ("Internal Server Error" in body or "A server error occurred" in body), body
            if path != "/read":
                after = {0} if path == "/destroy" else {n + 1 for n in self.possible}
                self.possible |= after | ({0} if path == "/regenerate" else set())
            return
        assert status == 200, (status, body)
        assert len(set_cookies) <= 1
        if path == "/destroy":
            assert body == "bye"
            self.possible = {0}
        elif path == "/read":
            assert int(body) in self.possible and not set_cookies, (body, self.possible)
            self.possible = {int(body)}
        else:
            n = int(body)
            assert n - 1 in self.possible, (n, self.possible)
            self.possible = {n}
            if n == 1 or path == "/regenerate":
                assert set_cookies, "a new or regenerated session sends its cookie"
        if set_cookies:
            pair = set_cookies[0].split(";", 1)[0]
            self.cookie = None if pair.endswith("=") else pair


@pytest.mark.parametrize("kind", ["mixin", "wsgi"])
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_store_failing_at_random_gives_correct_answers_or_clean_500s(kind, backend, tmp_path):
    inner = sessions.MemoryStore() if backend == "memory" else sessions.SQLiteStore(str(tmp_path / "s.db"))
    store = FaultyStore(inner, seed=len(kind) * 10 + len(backend), rate=0.3)
    servers = Servers(kind, sessions.SessionManager(SECRET, store=store, cookie={"max_age": 3600}))
    rng = random.Random(7)
    visitors = [Visitor() for _ in range(4)]
    try:
        def run(visitor: Visitor) -> None:
            for _ in range(40 * SCALE):
                visitor.visit(servers, rng.choice(["/count"] * 5 + ["/read", "/regenerate", "/destroy"]))

        threads = [threading.Thread(target=run, args=(v,)) for v in visitors]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not any(thread.is_alive() for thread in threads)
        assert sum(v.answered for v in visitors) == 4 * 40 * SCALE  # every request had its answer
        store.rate = 0  # the outage ends: the server keeps serving everybody
        for visitor in visitors + [Visitor()]:
            visitor.visit(servers, "/count")
    finally:
        servers.stop()
    for sid in inner.ids():  # nothing half-written: every record is whole
        record = sessions._parse_record(conftest_record(inner, sid))
        assert isinstance(record[0]["n"], int)
    log_text = "".join(servers.errors)
    assert store.faults and "StoreError" in log_text
    assert not any(sid in log_text for sid in store.ids_seen)
    tally("faults injected", store.faults)
    tally("store stalls", store.stalls)
    tally("requests answered under faults", sum(v.answered for v in visitors))


def test_the_demo_answers_every_request_while_its_store_fails_at_random():
    """The red team's finding: 30 of 90 requests to the demo got no answer under a failing store."""
    import demo_server
    store = FaultyStore(sessions.MemoryStore(), seed=3, rate=0.3)
    manager = sessions.SessionManager(SECRET, store=store, cookie={"max_age": 3600})
    server = ThreadingHTTPServer(("127.0.0.1", 0), demo_server.make_handler(manager, log_requests=False))
    server.daemon_threads = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    statuses = []
    try:
        cookie = None
        for index in range(90 * SCALE):
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
            conn.request("GET", ["/", "/session.json", "/pitfall"][index % 3],
                         headers={"Cookie": cookie} if cookie else {})
            response = conn.getresponse()
            response.read()
            set_cookies = response.headers.get_all("Set-Cookie") or []
            conn.close()
            statuses.append(response.status)
            assert response.status in (200, 500), response.status
            if response.status == 500:
                assert not [c for c in set_cookies if c.startswith("sid=")]
            for value in set_cookies:
                if value.startswith("sid="):
                    cookie = value.split(";", 1)[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
    assert len(statuses) == 90 * SCALE and 200 in statuses and 500 in statuses
    tally("demo requests answered under faults", len(statuses))
    tally("faults injected", store.faults)


def conftest_record(store, sid):
    got = store.get(sid)
    return got[0] if isinstance(got, tuple) else got


def test_an_application_that_catches_the_commit_error_still_answers():
    """The demo's old trap: the handler catches the StoreError of end_headers and carries on."""
    store = FaultyStore(sessions.MemoryStore(), seed=1, rate=0)
    servers = Servers("mixin", sessions.SessionManager(SECRET, store=store), catch_errors=True)
    try:
        store.set = lambda *args: (_ for _ in ()).throw(KeyError("x"))
        status, body, set_cookies = servers.get("/count")
        assert (status, set_cookies) == (500, []) and body.startswith("Internal Server Error")
        del store.set
        assert servers.get("/count")[0] == 200
    finally:
        servers.stop()


class Boom(Exception):
    pass


def test_any_exception_before_the_response_is_a_bare_500_and_is_still_logged():
    manager = sessions.SessionManager(SECRET)
    servers = Servers("mixin", manager)
    servers.server.RequestHandlerClass.do_GET = lambda self: (self.session.__setitem__("n", 1),
                                                              self.send_response(200), self.send_header("X", "1"),
                                                              (_ for _ in ()).throw(Boom("no")))
    try:
        status, body, set_cookies = servers.get("/")
        assert (status, body, set_cookies) == (500, "Internal Server Error\n", [])
    finally:
        servers.stop()
    assert "Boom" in "".join(servers.errors) and len(manager.store) == 0


# Secrets stay out of logs ##################################################################################

LEAKY_SERVER = r'''
import logging, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import sessions

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

class Leaky(sessions.MemoryStore):
    def get(self, sid):
        raise KeyError(sid)
    def set(self, sid, record, expires):
        raise KeyError("no room for " + sid)

class Handler(sessions.SessionHandlerMixin, BaseHTTPRequestHandler):
    session_manager = sessions.SessionManager("a secret", store=Leaky(), genid=lambda: "newcomer" + "z" * 24)
    def do_GET(self):
        self.session["n"] = 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
'''


def test_a_store_error_quoting_the_session_id_reaches_no_log_line(tmp_path):
    """A real server process whose store raises KeyError(sid): its stderr (logging at DEBUG, and the
    tracebacks socketserver prints) never shows the id, nor the secret."""
    script, log_path = tmp_path / "leaky.py", tmp_path / "stderr.txt"
    script.write_text(LEAKY_SERVER)
    env = {"PYTHONPATH": str(Path(sessions.__file__).parent), "PATH": "/usr/bin:/bin"}
    with open(log_path, "w") as stderr:
        process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=stderr,
                                   text=True, env=env)
    try:
        port = int(process.stdout.readline())
        sid = "a" * 32
        cookie = "sid=s%3A" + sessions.sign(sid, "a secret").replace("/", "%2F").replace("+", "%2B")
        for header in (cookie, None):  # a load that fails, then a newcomer's save that fails
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/", headers={"Cookie": header} if header else {})
            response = conn.getresponse()
            assert (response.status, response.headers.get_all("Set-Cookie")) == (500, None)
            conn.close()
        for _ in range(1000):  # socketserver prints each traceback after its 500 went out: wait for both
            if log_path.read_text().count("sessions.StoreError: ") >= 2:
                break
            time.sleep(0.01)
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log_path.read_text()
    assert text.count("StoreError") >= 2 and "KeyError" in text
    assert sid not in text and "a secret" not in text
    assert "newcomer" not in text  # nor the newcomer's fresh id


def test_store_error_keeps_the_original_for_debugging_but_not_in_its_chain():
    store = FaultyStore(sessions.MemoryStore(), seed=0, rate=0)
    store.get = lambda sid: (_ for _ in ()).throw(KeyError(sid))
    manager = sessions.SessionManager(SECRET, store=store)
    sid = "-".join(["live", "id", str(random.getrandbits(64))])  # not in any source line of the traceback
    with pytest.raises(sessions.StoreError) as info:
        manager.open(cookie_for(sid))
    error = info.value
    assert isinstance(error.original, KeyError) and error.original.args == (sid,)
    assert error.__cause__ is None and error.__suppress_context__
    assert sid not in "".join(traceback.format_exception(type(error), error, error.__traceback__))


@pytest.mark.parametrize("method", ["get", "set", "touch", "destroy"])
def test_a_store_error_the_store_raised_itself_reaches_the_caller_as_it_was(method):
    own = sessions.StoreError("the cache cluster is read-only")

    class OwnErrors(TextStore):
        def fail(self, *args):
            raise own

    setattr(OwnErrors, method, OwnErrors.fail)
    store = OwnErrors()
    manager = sessions.SessionManager(SECRET, store=store)
    TextStore.set(store, "abc", '{"cookie":{"originalMaxAge":null,"expires":null,"path":"/"},"n":1}', None)
    with pytest.raises(sessions.StoreError) as info:
        session = manager.open(cookie_for("abc"))
        if method == "destroy":
            session.destroy()
        if method == "set":
            session["n"] = 2  # Store.update's default: a get and a set
        manager.commit(session)  # unmodified: a touch
    assert info.value is own


def test_a_malformed_request_target_is_a_400_in_the_demo(caplog):
    import demo_server
    manager = sessions.SessionManager(SECRET)
    handler = demo_server.make_handler(manager)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
        conn.putrequest("GET", "http://[::1/", skip_host=True, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 400 and b"Traceback" not in response.read()
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
    assert not [r for r in caplog.records if r.exc_info]


# Session flood #############################################################################################


def test_a_flood_of_cookieless_requests_stores_nothing():
    store = sessions.MemoryStore()
    manager = sessions.SessionManager(SECRET, store=store, cookie={"max_age": 3600})
    open_, commit = manager.open, manager.commit
    count = 1_000_000 * (2 if SCALE > 1 else 1)  # ~8 s for a million: the flood does not scale with SCALE
    for _ in range(count):
        if commit(open_(None)):
            raise AssertionError("a cookie for an empty new session")
    assert len(store) == 0 and store._entries == 0
    tally("flood: cookie-less requests", count)


def test_a_flood_of_new_sessions_keeps_memory_bounded_and_active_sessions_alive():
    """max_sessions bounds the store; sessions in use (touched every second) outlive the flood, which
    evicts the records closest to expiry: the flood's own earlier ones."""
    now = [1_700_000_000.0]
    store = sessions.MemoryStore(max_sessions=2000, clock=lambda: now[0])
    manager = sessions.SessionManager(SECRET, store=store, cookie={"max_age": 600}, clock=lambda: now[0])
    active = []
    for _ in range(20):
        session = manager.open(None)
        session["user"] = "regular"
        active.append(manager.commit(session)[0].split(";", 1)[0])
    flood = 0
    for second in range(50 * SCALE):
        now[0] += 1
        for _ in range(500):
            session = manager.open(None)
            session["x"] = 1
            manager.commit(session)
            flood += 1
        for cookie in active:  # the regulars come back every second
            session = manager.open(cookie)
            assert session["user"] == "regular", f"an active session was evicted at second {second}"
            manager.commit(session)
        assert len(store._records) <= 2000 and store._entries <= 2 * 2000 + 1024
    tally("flood: new sessions under max_sessions", flood)


def test_the_owasp_table_names_real_tests():
    readme = (Path(__file__).parent / "README.md").read_text()
    table = readme.split("## Security checklist (OWASP)", 1)[1]
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", table)
    assert len(named) >= 20
    for file, name in named:
        source = (Path(__file__).parent / file).read_text()
        assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{file}::{name} does not exist"
