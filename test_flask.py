"""FlaskSessionInterface as a Flask user meets it: configured the Flask way, Flask's session contract (new,
modified, accessed, permanent, Vary, session_transaction, stream_with_context, the SessionInterface hooks).

Most tests are Flask's own session tests (flask/tests/test_basic.py), run on sessions.py with Flask's test
client; where sessions.py deliberately differs the test says so. The end-to-end tests run real servers on
127.0.0.1 (werkzeug's, and gunicorn with two workers sharing an SQLiteStore) with urllib and a cookie jar.
The tests on the ``app`` fixture run with MemoryStore and with SQLiteStore.
"""

from __future__ import annotations

import collections
import os
import sys
import enum
import json
import re
import threading
import uuid
import urllib.parse
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, Iterator

import flask
import pytest
from flask.json.tag import JSONTag, TaggedJSONSerializer
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup
from werkzeug.http import parse_date

import sessions
from conftest import RecordingStore, free_port, record_of, sid_of, stop_process
from test_frameworks import Browser, accepts_connections, fail_to_start, serve_wsgi, spawn, wait_for


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path) -> RecordingStore:
    inner = sessions.MemoryStore() if request.param == "memory" else sessions.SQLiteStore(tmp_path / "s.db")
    return RecordingStore(inner)


@pytest.fixture
def app(store) -> flask.Flask:
    """Flask's own test app (tests/conftest.py), its session on sessions.py configured by app.config."""
    app = flask.Flask("flask_test")
    app.config.update(TESTING=True, SECRET_KEY="test key")
    app.session_interface = sessions.FlaskSessionInterface(store=store)
    return app


@pytest.fixture
def client(app) -> Any:
    return app.test_client()


def cookie_of(response: Any) -> str:
    (cookie,) = response.headers.getlist("Set-Cookie")
    return cookie


def request_session() -> Any:
    """The session object of the current request, without setting ``accessed`` (as flask.session would)."""
    return flask.globals.request_ctx._session


# Configured the Flask way (issue 15, item 2) ##############################################################


def test_session_using_session_settings(app, client):
    """Flask's test, over HTTPS: sessions.py never sends a Secure cookie over plain HTTP."""
    app.config.update(
        SERVER_NAME="www.example.com:8080",
        APPLICATION_ROOT="/test",
        SESSION_COOKIE_DOMAIN=".example.com",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_PARTITIONED=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_NAME="flask-session",
    )

    @app.route("/")
    def index():
        flask.session["testing"] = 42
        return "Hello World"

    @app.route("/clear")
    def clear():
        flask.session.pop("testing", None)
        return "Goodbye World"

    cookie = cookie_of(client.get("/", "https://www.example.com:8080/test/"))
    assert cookie.startswith("flask-session=s%3A")
    assert "; Domain=example.com;" in cookie and "; Path=/;" in cookie
    assert "HttpOnly" not in cookie
    assert "; Secure" in cookie and "; Partitioned" in cookie and "; SameSite=Lax" in cookie

    cookie = cookie_of(client.get("/clear", "https://www.example.com:8080/test/"))
    assert cookie.startswith("flask-session=;")  # emptied: Flask deletes the cookie, with the same attributes
    assert "Max-Age=0" in cookie and "; Domain=example.com;" in cookie and "; Path=/;" in cookie
    assert "; Secure" in cookie and "; Partitioned" in cookie and "; SameSite=Lax" in cookie


def test_session_path(app, client):
    app.config.update(APPLICATION_ROOT="/foo")

    @app.route("/")
    def index():
        flask.session["testing"] = 42
        return "Hello World"

    rv = client.get("/", "http://example.com:8080/foo")
    assert "path=/foo" in rv.headers["set-cookie"].lower()


def test_session_using_application_root(app, client):
    class PrefixPathMiddleware:
        def __init__(self, app, prefix):
            self.app = app
            self.prefix = prefix

        def __call__(self, environ, start_response):
            environ["SCRIPT_NAME"] = self.prefix
            return self.app(environ, start_response)

    app.wsgi_app = PrefixPathMiddleware(app.wsgi_app, "/bar")
    app.config.update(APPLICATION_ROOT="/bar")

    @app.route("/")
    def index():
        flask.session["testing"] = 42
        return "Hello World"

    rv = client.get("/", "http://example.com:8080/")
    assert "path=/bar" in rv.headers["set-cookie"].lower()


def test_session_using_samesite_attribute(app, client):
    @app.route("/")
    def index():
        flask.session["testing"] = 42
        return "Hello World"

    app.config.update(SESSION_COOKIE_SAMESITE="invalid")
    with pytest.raises(ValueError, match="SESSION_COOKIE_SAMESITE='invalid'"):  # a ConfigurationError
        client.get("/")

    # The settings are read on every request, as Flask does. A fresh client each time: Flask re-sends the
    # cookie whenever a view assigns a value; sessions.py when the data changed (compared as JSON).
    app.config.update(SESSION_COOKIE_SAMESITE=None)
    assert "samesite" not in app.test_client().get("/").headers["set-cookie"].lower()
    app.config.update(SESSION_COOKIE_SAMESITE="Strict")
    assert "samesite=strict" in app.test_client().get("/").headers["set-cookie"].lower()
    app.config.update(SESSION_COOKIE_SAMESITE="Lax")
    assert "samesite=lax" in app.test_client().get("/").headers["set-cookie"].lower()


def test_samesite_none_needs_secure_and_the_error_names_the_settings(app, client):
    app.config.update(SESSION_COOKIE_SAMESITE="None")  # Flask would send it; every browser drops it
    with pytest.raises(sessions.ConfigurationError, match="SESSION_COOKIE_SAMESITE='None'"):
        client.get("/")


def test_missing_session(app):
    app.secret_key = None

    def expect_exception(f, *args, **kwargs):
        e = pytest.raises(RuntimeError, f, *args, **kwargs)
        assert e.value.args and "session is unavailable" in e.value.args[0]

    with app.test_request_context():
        assert flask.session.get("missing_key") is None
        expect_exception(flask.session.__setitem__, "foo", 42)
        expect_exception(flask.session.pop, "foo")


def test_session_secret_key_fallbacks(app, client, store) -> None:
    @app.post("/")
    def set_session() -> str:
        flask.session["a"] = 1
        return ""

    @app.get("/")
    def get_session() -> dict:
        return dict(flask.session)

    # Set session with initial secret key, and two valid expiring keys
    app.secret_key, app.config["SECRET_KEY_FALLBACKS"] = ("0 key", ["-1 key", "-2 key"])
    client.post()
    assert client.get().json == {"a": 1}
    # Change secret key, session can't be loaded and appears empty
    app.secret_key = "? key"
    assert client.get().json == {}
    # Rotate the valid keys, session can be loaded
    app.secret_key, app.config["SECRET_KEY_FALLBACKS"] = ("+1 key", ["0 key", "-1 key"])
    rv = client.get()
    assert rv.json == {"a": 1}
    sid_of(cookie_of(rv), "+1 key")  # signed with a fallback: re-signed with the current key at once
    assert client.get().headers.getlist("Set-Cookie") == []


def test_session_expiration(app, client):
    permanent = True

    @app.route("/")
    def index():
        flask.session["test"] = 42
        flask.session.permanent = permanent
        return ""

    @app.route("/test")
    def test():
        return str(flask.session.permanent)

    rv = client.get("/")
    assert "set-cookie" in rv.headers
    match = re.search(r"(?i)\bexpires=([^;]+)", rv.headers["set-cookie"])
    expires = parse_date(match.group(1))
    expected = datetime.now(timezone.utc) + app.permanent_session_lifetime
    assert abs(expires - expected) < timedelta(minutes=1)

    rv = client.get("/test")
    assert rv.data == b"True"

    permanent = False
    rv = client.get("/")
    assert "set-cookie" in rv.headers
    match = re.search(r"\bexpires=([^;]+)", rv.headers["set-cookie"])
    assert match is None


def test_permanent_session_lifetime_is_the_cookie_lifetime(app, client):
    app.config["PERMANENT_SESSION_LIFETIME"] = 3600

    @app.route("/")
    def index():
        flask.session.permanent = True
        flask.session["n"] = 1
        return ""

    assert "Max-Age=3600;" in cookie_of(client.get("/"))


def test_session_cookie_setting(app):
    """SESSION_REFRESH_EACH_REQUEST: a permanent session's cookie is re-sent on every request that uses it."""
    is_permanent = True

    @app.route("/bump")
    def bump():
        rv = flask.session["foo"] = flask.session.get("foo", 0) + 1
        flask.session.permanent = is_permanent
        return str(rv)

    @app.route("/read")
    def read():
        return str(flask.session.get("foo", 0))

    def run_test(expect_header):
        with app.test_client() as c:
            assert c.get("/bump").data == b"1"
            assert c.get("/bump").data == b"2"
            assert c.get("/bump").data == b"3"

            rv = c.get("/read")
            set_cookie = rv.headers.get("set-cookie")
            assert (set_cookie is not None) == expect_header
            assert rv.data == b"3"

    is_permanent = True
    app.config["SESSION_REFRESH_EACH_REQUEST"] = True
    run_test(expect_header=True)

    is_permanent = True
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    run_test(expect_header=False)

    is_permanent = False
    app.config["SESSION_REFRESH_EACH_REQUEST"] = True
    run_test(expect_header=False)

    is_permanent = False
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    run_test(expect_header=False)


def test_session_refresh_vary(app, client, store):
    """Flask re-sends a permanent cookie even on a request that never uses the session; sessions.py only on
    one that does, so a view that never touches the session still costs no store call."""
    @app.get("/login")
    def login():
        flask.session["user_id"] = 1
        flask.session.permanent = True
        return ""

    @app.get("/ignored")
    def ignored():
        return ""

    @app.get("/read")
    def read():
        return str(flask.session["user_id"])

    rv = client.get("/login")
    assert rv.headers["Vary"] == "Cookie"
    store.calls.clear()
    rv = client.get("/ignored")
    assert "Vary" not in rv.headers and "Set-Cookie" not in rv.headers and store.calls == []
    rv = client.get("/read")
    assert rv.headers["Vary"] == "Cookie" and "Max-Age=" in rv.headers["Set-Cookie"]


def cookie_attributes(set_cookie: str) -> Dict[str, Any]:
    """A Set-Cookie value's attributes, compared the way a browser reads them (Max-Age or Expires: expires)."""
    attributes: Dict[str, Any] = {}
    for part in set_cookie.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        name = name.lower()
        if name in ("max-age", "expires"):
            attributes["expires"] = True
        else:
            attributes[name] = value.lower() if name == "samesite" else value or True
    return attributes


@given(
    domain=st.sampled_from([None, "example.com", ".example.com"]),
    cookie_path=st.sampled_from([None, "/", "/app"]),
    root=st.sampled_from(["/", "/app"]),
    http_only=st.booleans(),
    secure=st.booleans(),
    same_site=st.sampled_from([None, "Lax", "Strict", "lax"]),
    partitioned=st.booleans(),
    permanent=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_the_cookie_has_the_attributes_flasks_own_session_gives_it(
    domain, cookie_path, root, http_only, secure, same_site, partitioned, permanent
):
    """Any mix of Flask's cookie settings: our cookie carries what Flask's own session cookie carries."""
    config = dict(SECRET_KEY="k", SESSION_COOKIE_DOMAIN=domain, SESSION_COOKIE_PATH=cookie_path,
                  APPLICATION_ROOT=root, SESSION_COOKIE_HTTPONLY=http_only, SESSION_COOKIE_SECURE=secure,
                  SESSION_COOKIE_SAMESITE=same_site, SESSION_COOKIE_PARTITIONED=partitioned)
    prefix = (cookie_path or root).rstrip("/")
    cookies = []
    for interface in (None, sessions.FlaskSessionInterface()):
        app = flask.Flask("flask_test")
        app.config.update(config)
        if interface is not None:
            app.session_interface = interface

        @app.route("/")
        def index():
            flask.session["n"] = 1
            flask.session.permanent = permanent
            return ""

        cookies.append(cookie_of(app.test_client().get("/", "https://example.com" + prefix)))
    flasks, ours = map(cookie_attributes, cookies)
    assert ours == flasks


def test_settings_are_read_again_when_they_change(app, client):
    @app.route("/")
    def index():
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    assert client.get("/").text == "1"
    app.config["SESSION_COOKIE_NAME"] = "other"  # the browser's "session" cookie no longer names it
    rv = client.get("/")
    assert rv.text == "1" and cookie_of(rv).startswith("other=")
    assert client.get("/").text == "2"


def test_an_invalid_cookie_name_is_a_configuration_error_naming_the_setting(app, client):
    app.config["SESSION_COOKIE_NAME"] = "my session"
    with pytest.raises(sessions.ConfigurationError, match="SESSION_COOKIE_NAME='my session'"):
        client.get("/")


def test_one_interface_serves_two_apps_each_with_its_settings(store):
    interface = sessions.FlaskSessionInterface(store=store)
    apps = []
    for name in ("one", "two"):
        app = flask.Flask(name)
        app.config.update(SECRET_KEY="k " + name, SESSION_COOKIE_NAME=name)
        app.session_interface = interface
        app.add_url_rule("/", "index", lambda: flask.session.setdefault("at", flask.request.host))
        apps.append(app)
    cookies = [cookie_of(app.test_client().get("/")) for app in apps]
    assert [cookie.split("=", 1)[0] for cookie in cookies] == ["one", "two"]
    sid_of(cookies[0], "k one"), sid_of(cookies[1], "k two")


# Migrating from Flask-Session ############################################################################


def test_flask_sessions_session_permanent_makes_every_new_session_permanent(app, client):
    app.config.update(SESSION_PERMANENT=True, PERMANENT_SESSION_LIFETIME=600)

    @app.route("/")
    def index():
        flask.session["n"] = 1
        return str(flask.session.permanent)

    rv = client.get("/")
    assert rv.text == "True" and "Max-Age=600;" in cookie_of(rv)


@pytest.mark.parametrize("setting, value", [
    ("SESSION_TYPE", "redis"), ("SESSION_KEY_PREFIX", "session:"), ("SESSION_SERIALIZATION_FORMAT", "json"),
    ("SESSION_SQLALCHEMY_TABLE", "sessions"), ("SESSION_ID_LENGTH", 32),
])
def test_a_flask_session_setting_left_in_the_config_is_an_error_naming_it(app, client, setting, value):
    app.config[setting] = value
    with pytest.raises(sessions.ConfigurationError, match=f"{setting}.*Flask-Session's setting"):
        client.get("/")


def test_flask_sessions_use_signer_is_moot(app, client):
    app.config["SESSION_USE_SIGNER"] = False  # the id is signed anyway
    app.add_url_rule("/", "index", lambda: str(flask.session.setdefault("n", 1)))
    sid_of(cookie_of(client.get("/")), "test key")


# Flask's types survive (item 3) ###########################################################################


def test_session_special_types(app, client, store):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    the_uuid = uuid.uuid4()

    @app.route("/")
    def dump_session_contents():
        flask.session["t"] = (1, 2, 3)
        flask.session["b"] = b"\xff"
        flask.session["m"] = Markup("<html>")
        flask.session["u"] = the_uuid
        flask.session["d"] = now
        flask.session["t_tag"] = {" t": "not-a-tuple"}
        flask.session["di_t_tag"] = {" t__": "not-a-tuple"}
        flask.session["di_tag"] = {" di": "not-a-dict"}
        flask.session["nested"] = {"pair": ("a", b"b"), "list": [Markup("<i>"), the_uuid]}
        return "", 204

    @app.route("/read")
    def read():
        s = flask.session
        assert s["t"] == (1, 2, 3)
        assert type(s["b"]) is bytes  # noqa: E721
        assert s["b"] == b"\xff"
        assert type(s["m"]) is Markup  # noqa: E721
        assert s["m"] == Markup("<html>")
        assert s["u"] == the_uuid
        assert s["d"] == now
        assert s["t_tag"] == {" t": "not-a-tuple"}
        assert s["di_t_tag"] == {" t__": "not-a-tuple"}
        assert s["di_tag"] == {" di": "not-a-dict"}
        assert s["nested"] == {"pair": ("a", b"b"), "list": [Markup("<i>"), the_uuid]}
        assert type(s["nested"]["list"][0]) is Markup  # noqa: E721
        return "ok"

    sid = sid_of(cookie_of(client.get("/")))
    assert client.get("/read").text == "ok"  # loaded back from the store, not the request's objects
    record = json.loads(record_of(store, sid))  # plain JSON, in Flask's tagged form: an Express app reads it
    assert record["t"] == {" t": [1, 2, 3]} and record["b"] == {" b": "/w=="} and record["m"] == {" m": "<html>"}
    assert record["u"] == {" u": the_uuid.hex} and record["di_tag"] == {" di": {" di__": "not-a-dict"}}


def test_extended_flashing(app):
    @app.route("/")
    def index():
        flask.flash("Hello World")
        flask.flash("Hello World", "error")
        flask.flash(Markup("<em>Testing</em>"), "warning")
        return ""

    @app.route("/test/")
    def test():
        messages = flask.get_flashed_messages()
        assert list(messages) == ["Hello World", "Hello World", Markup("<em>Testing</em>")]
        assert type(messages[2]) is Markup  # noqa: E721  # renders as HTML on the next page, not escaped
        return ""

    @app.route("/test_with_categories/")
    def test_with_categories():
        messages = flask.get_flashed_messages(with_categories=True)
        assert len(messages) == 3
        assert list(messages) == [
            ("message", "Hello World"),
            ("error", "Hello World"),
            ("warning", Markup("<em>Testing</em>")),
        ]
        return ""

    @app.route("/test_filter/")
    def test_filter():
        messages = flask.get_flashed_messages(category_filter=["message"], with_categories=True)
        assert list(messages) == [("message", "Hello World")]
        return ""

    @app.route("/test_filters/")
    def test_filters():
        messages = flask.get_flashed_messages(category_filter=["message", "warning"], with_categories=True)
        assert list(messages) == [("message", "Hello World"), ("warning", Markup("<em>Testing</em>"))]
        return ""

    for path in ("/test/", "/test_with_categories/", "/test_filter/", "/test_filters/"):
        client = app.test_client()
        client.get("/")
        assert client.get(path).status_code == 200


def test_a_markup_flash_renders_as_html_on_the_next_page(app, client):
    @app.route("/flash")
    def flash():
        flask.flash(Markup("<b>saved</b>"))
        return flask.redirect("/show")

    @app.route("/show")
    def show():
        return flask.render_template_string("{% for m in get_flashed_messages() %}{{ m }}{% endfor %}")

    assert client.get("/flash", follow_redirects=True).text == "<b>saved</b>"


class Tagged(str):
    pass


class Color(enum.IntEnum):
    RED = 1


Pair = collections.namedtuple("Pair", "a b")


@pytest.mark.parametrize("value", [
    datetime(2024, 1, 2, 3, 4, 5),  # naive: Flask's tag gives it back in UTC, aware
    datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=timezone.utc),  # microseconds: Flask's tag keeps seconds
    Tagged("a str subclass"),
    {1: "int key"},
    collections.OrderedDict(a=1),
    {"a set"},
    [("nested", {"a set"})],
    date(2024, 1, 2),
    Color.RED,
    Pair(1, 2),
], ids=repr)
def test_what_would_not_come_back_the_same_is_refused_at_assignment(app, client, store, value):
    @app.route("/")
    def index():
        flask.session["kept"] = 1
        with pytest.raises(sessions.SerializationError, match="'v'"):
            flask.session["v"] = value
        assert "v" not in flask.session
        return "refused"

    assert client.get("/").text == "refused"


_flask_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text() | st.binary() | st.uuids()
    | st.builds(Markup, st.text())
    | st.datetimes(datetime(1000, 1, 1), timezones=st.just(timezone.utc)).map(lambda d: d.replace(microsecond=0)),
    lambda children: st.lists(children, max_size=3) | st.tuples(children, children)
    | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=8,
)


@given(value=_flask_values)
@settings(max_examples=60, deadline=None)
def test_every_value_flasks_session_keeps_comes_back_with_its_types(value):
    """A property over Flask's types: stored by one request, loaded by the next, equal with its types."""
    store = sessions.MemoryStore()
    app = flask.Flask("flask_test")
    app.config.update(TESTING=True, SECRET_KEY="test key")
    app.session_interface = sessions.FlaskSessionInterface(store=store)
    seen = []

    @app.route("/set")
    def set_value():
        flask.session["v"] = value
        return ""

    @app.route("/get")
    def get_value():
        seen.append(flask.session["v"])
        return ""

    client = app.test_client()
    client.get("/set")
    client.get("/get")
    assert sessions._same_value(seen[0], value)


def test_an_explicit_manager_keeps_flasks_types_with_the_codec(store):
    manager = sessions.SessionManager("secret", store=store, codec=sessions.FlaskTaggedJSON())
    app = explicit_app(manager)
    app.add_url_rule("/set", "set", lambda: flask.session.update(pair=(1, Markup("<i>"))) or "")
    app.add_url_rule("/get", "get", lambda: repr(flask.session["pair"]))
    client = app.test_client()
    client.get("/set")
    assert client.get("/get").text == "(1, Markup('<i>'))"


def test_an_extensions_tag_registered_on_the_interfaces_serializer_is_used(app):
    class TagFrozenSet(JSONTag):
        __slots__ = ()
        key = " fs"

        def check(self, value):
            return isinstance(value, frozenset)

        def to_json(self, value):
            return sorted(value)

        def to_python(self, value):
            return frozenset(value)

    # a serializer of its own (Flask's shared one stays as it is); by default the interface's is Flask's
    assert sessions.FlaskSessionInterface().serializer is flask.sessions.session_json_serializer
    app.session_interface = sessions.FlaskSessionInterface(serializer=TaggedJSONSerializer())
    app.session_interface.serializer.register(TagFrozenSet)
    client = app.test_client()

    @app.route("/set")
    def set_value():
        flask.session["f"] = frozenset({2, 1})
        return ""

    @app.route("/get")
    def get_value():
        return repr(flask.session["f"])

    client.get("/set")
    assert client.get("/get").text == "frozenset({1, 2})"


# An explicit manager decides; a contradicting Flask setting is an error ###################################


def explicit_app(manager: sessions.SessionManager, **config: Any) -> flask.Flask:
    app = flask.Flask("explicit")
    app.config.update(TESTING=True, **config)
    app.session_interface = sessions.FlaskSessionInterface(manager)  # positional, as before
    app.add_url_rule("/", "index", lambda: str(flask.session.setdefault("n", 1)))
    return app


@pytest.mark.parametrize("setting, value, message", [
    ("SESSION_COOKIE_SECURE", True, "cookie secure is False"),
    ("SESSION_COOKIE_NAME", "session2", "name is 'sid'"),
    ("SESSION_COOKIE_HTTPONLY", False, "cookie http_only is True"),
    ("SESSION_COOKIE_SAMESITE", "Strict", "cookie same_site is 'Lax'"),
    ("SESSION_COOKIE_DOMAIN", "example.com", "cookie domain is None"),
    ("SESSION_COOKIE_PATH", "/app", "cookie path is '/'"),
    ("APPLICATION_ROOT", "/app", "cookie path is '/'"),
])
def test_a_setting_that_contradicts_the_manager_is_an_error_at_the_first_request(store, setting, value, message):
    app = explicit_app(sessions.SessionManager("secret", store=store), **{setting: value})
    with pytest.raises(sessions.ConfigurationError, match=re.escape(setting) + ".*" + re.escape(message)):
        app.test_client().get("/")


def test_session_permanent_contradicts_a_manager_without_a_lifetime(store):
    app = explicit_app(sessions.SessionManager("secret", store=store), SESSION_PERMANENT=True)
    with pytest.raises(sessions.ConfigurationError, match="SESSION_PERMANENT.*cookie max_age is None"):
        app.test_client().get("/")


def test_refresh_off_contradicts_a_rolling_manager(store):
    app = explicit_app(sessions.SessionManager("secret", store=store, rolling=True),
                       SESSION_REFRESH_EACH_REQUEST=False)
    with pytest.raises(sessions.ConfigurationError, match="SESSION_REFRESH_EACH_REQUEST.*rolling"):
        app.test_client().get("/")


def test_settings_that_agree_with_the_manager_or_are_flask_defaults_are_fine(store):
    manager = sessions.SessionManager("secret", store=store, name="app", cookie={"secure": True, "same_site": "Strict"})
    app = explicit_app(manager, SESSION_COOKIE_NAME="app", SESSION_COOKIE_SECURE=True,
                       SESSION_COOKIE_SAMESITE="strict", SECRET_KEY="the app's own")
    client = app.test_client()
    assert client.get("/", "https://localhost/").text == "1"
    assert app.session_interface.get_cookie_name(app) == "app"


def test_a_manager_and_a_store_together_are_refused(store):
    with pytest.raises(sessions.ConfigurationError, match="not both"):
        sessions.FlaskSessionInterface(sessions.SessionManager("secret"), store=store)
    with pytest.raises(sessions.ConfigurationError, match="not both"):
        sessions.FlaskSessionInterface(sessions.SessionManager("secret"), serializer=TaggedJSONSerializer())


# Vary, Cache-Control and the rest of the contract (item 4) ################################################


def test_session_vary_cookie(app, client):
    @app.route("/set")
    def set_session():
        flask.session["test"] = "test"
        return ""

    @app.route("/get")
    def get():
        return flask.session.get("test")

    @app.route("/getitem")
    def getitem():
        return flask.session["test"]

    @app.route("/setdefault")
    def setdefault():
        return flask.session.setdefault("test", "default")

    @app.route("/clear")
    def clear():
        flask.session.clear()
        return ""

    @app.route("/vary-cookie-header-set")
    def vary_cookie_header_set():
        response = flask.Response()
        response.vary.add("Cookie")
        flask.session["test"] = "test"
        return response

    @app.route("/vary-header-set")
    def vary_header_set():
        response = flask.Response()
        response.vary.update(("Accept-Encoding", "Accept-Language"))
        flask.session["test"] = "test"
        return response

    @app.route("/no-vary-header")
    def no_vary_header():
        return ""

    def expect(path, header_value="Cookie"):
        rv = client.get(path)

        if header_value:
            # The 'Vary' key should exist in the headers only once.
            assert len(rv.headers.get_all("Vary")) == 1
            assert rv.headers["Vary"] == header_value
        else:
            assert "Vary" not in rv.headers

    expect("/set")
    expect("/get")
    expect("/getitem")
    expect("/setdefault")
    expect("/clear")
    expect("/vary-cookie-header-set")
    expect("/vary-header-set", "Accept-Encoding, Accept-Language, Cookie")
    expect("/no-vary-header", None)


@pytest.mark.parametrize("view_sets, expected", [
    (None, 'no-cache="Set-Cookie"'),
    ("max-age=60, public", 'max-age=60, public, no-cache="Set-Cookie"'),
    ("no-store", "no-store"),
    ("private", "private"),
    ("no-cache", "no-cache"),
    ('no-cache="X-Trace"', 'no-cache="X-Trace, Set-Cookie"'),
])
def test_cache_control_merges_with_the_views(app, client, view_sets, expected):
    @app.route("/")
    def index():
        flask.session["n"] = 1
        response = flask.Response("")
        if view_sets:
            response.headers["Cache-Control"] = view_sets
        return response

    rv = client.get("/")
    assert rv.headers.getlist("Cache-Control") == [expected]


def test_session_accessed(app, client):
    @app.post("/")
    def do_set():
        flask.session["value"] = flask.request.form["value"]
        return "value set"

    @app.get("/")
    def do_get():
        return flask.session.get("value", "None")

    @app.get("/nothing")
    def do_nothing() -> str:
        return ""

    with client:
        rv = client.get("/nothing")
        assert "cookie" not in rv.vary
        assert not request_session().accessed
        assert not request_session().modified

    with client:
        rv = client.post(data={"value": "42"})
        assert rv.text == "value set"
        assert "cookie" in rv.vary
        assert request_session().accessed
        assert request_session().modified

    with client:
        rv = client.get()
        assert rv.text == "42"
        assert "cookie" in rv.vary
        assert request_session().accessed
        assert not request_session().modified

    with client:
        rv = client.get("/nothing")
        assert rv.text == ""
        assert "cookie" not in rv.vary
        assert not request_session().accessed
        assert not request_session().modified


def test_session_stored_last(app, client):
    @app.after_request
    def modify_session(response):
        flask.session["foo"] = 42
        return response

    @app.route("/")
    def dump_session_contents():
        return repr(flask.session.get("foo"))

    assert client.get("/").data == b"None"
    assert client.get("/").data == b"42"


def test_flashes(app):
    with app.test_request_context():
        assert not flask.session.modified
        flask.flash("Zap")
        flask.session.modified = False  # drops a forced save only: the data still differs from the loaded
        flask.flash("Zip")
        assert flask.session.modified
        assert list(flask.get_flashed_messages()) == ["Zap", "Zip"]


def test_new_and_permanent(app, client):
    @app.route("/")
    def index():
        state = {"new": flask.session.new, "permanent": flask.session.permanent}
        flask.session["seen"] = True
        return state

    assert client.get("/").json == {"new": True, "permanent": False}
    assert client.get("/").json == {"new": False, "permanent": False}


def test_clear_on_logout_deletes_the_record_and_the_cookie(app, client, store):
    @app.route("/login")
    def login():
        flask.session["user"] = "alice"
        return ""

    @app.route("/logout")
    def logout():
        flask.session.clear()
        return ""

    sid = sid_of(cookie_of(client.get("/login")))
    cookie = cookie_of(client.get("/logout"))
    assert cookie.startswith("session=;") and "Max-Age=0" in cookie
    assert record_of(store, sid) is None
    assert client.get_cookie("session") is None


def test_session_transaction(app, client, store):
    @app.route("/")
    def index():
        return str(flask.session.get("foo"))

    with client.session_transaction() as sess:
        assert len(sess) == 0
        sess["foo"] = [42]
        assert len(sess) == 1
    rv = client.get("/")
    assert rv.data == b"[42]"
    with client.session_transaction() as sess:
        assert len(sess) == 1
        assert sess["foo"] == [42]


def test_session_transaction_needs_a_secret_key_as_flask_does(app, client):
    app.secret_key = None
    with pytest.raises(RuntimeError, match="Session backend did not open a session"):
        with client.session_transaction():
            pass


def test_stream_with_context_reads_the_session_and_refuses_late_writes(app, client):
    @app.route("/")
    def index():
        flask.session["n"] = 1

        @flask.stream_with_context
        def generate():
            yield str(flask.session["n"])  # the session of the request, committed with the headers
            try:
                flask.session["n"] = 2
            except sessions.SessionClosedError:
                yield " closed"

        return flask.Response(generate())

    rv = client.get("/")
    assert rv.text == "1 closed" and "Set-Cookie" in rv.headers


def test_the_session_interface_hooks_answer_for_the_session(app):
    app.config.update(SESSION_COOKIE_NAME="s", SESSION_COOKIE_DOMAIN="example.com:8080", APPLICATION_ROOT="/a",
                      SESSION_COOKIE_HTTPONLY=False, SESSION_COOKIE_SECURE=True, SESSION_COOKIE_SAMESITE="strict")
    interface = app.session_interface
    assert interface.get_cookie_name(app) == "s"
    assert interface.get_cookie_domain(app) == "example.com"
    assert interface.get_cookie_path(app) == "/a"
    assert interface.get_cookie_httponly(app) is False
    assert interface.get_cookie_secure(app) is True
    assert interface.get_cookie_samesite(app) == "Strict"
    assert interface.get_cookie_partitioned(app) is False
    assert interface.pickle_based is False
    with app.test_request_context("/a/", "https://example.com/"):
        session = interface.open_session(app, flask.request)
        assert interface.get_expiration_time(app, session) is None
        assert interface.should_set_cookie(app, session) is False
        session.permanent = True
        expires = interface.get_expiration_time(app, session)
        assert abs(expires - datetime.now(timezone.utc) - app.permanent_session_lifetime) < timedelta(minutes=1)
        assert interface.should_set_cookie(app, session) is True  # permanent and refreshed
        assert not interface.is_null_session(session)
    null = interface.make_null_session(app)
    assert interface.is_null_session(null) and isinstance(null, flask.sessions.NullSession)


# A real server: werkzeug on 127.0.0.1, urllib with a cookie jar ############################################


@pytest.fixture
def served(app) -> Iterator[Browser]:
    @app.route("/count")
    def count():
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    @app.route("/remember")
    def remember():
        flask.session.permanent = True
        return "ok"

    @app.route("/read")
    def read():
        return str(flask.session.get("n"))

    app.config.update(TESTING=False, SESSION_COOKIE_NAME="sid", SECRET_KEY_FALLBACKS=["older key"])
    with serve_wsgi(app) as base:
        yield Browser(base)


def test_real_server_counts_with_flask_settings(served, store):
    replies = [served.open("/count") for _ in range(3)]
    assert [reply.body for reply in replies] == ["1", "2", "3"]
    assert [len(reply.set_cookies) for reply in replies] == [1, 0, 0]  # a browser-session cookie: not refreshed
    assert all(reply.headers.get_all("Vary") == ["Cookie"] for reply in replies)
    assert sessions.unsign(urllib.parse.unquote(served.cookie)[2:], "test key") == served.sid
    assert '"n":3' in record_of(store, served.sid)


def test_real_server_refreshes_a_permanent_cookie_on_every_request_that_uses_it(served):
    served.open("/count")
    (cookie,) = served.open("/remember").set_cookies
    assert f"Max-Age={31 * 86400}" in cookie
    (cookie,) = served.open("/read").set_cookies  # read only, yet re-sent: an active user stays logged in
    assert f"Max-Age={31 * 86400}" in cookie
    assert served.open("/read").body == "1"


def test_real_server_concurrent_requests_each_get_an_answer(served):
    served.open("/count")
    results = []

    def read():
        results.append(served.open("/read").body)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == ["1"] * 8


GUNICORN_APP = """
import os, flask, markupsafe, sessions

app = flask.Flask(__name__)
app.config.update(SECRET_KEY="test key", SESSION_COOKIE_NAME="sid", SESSION_COOKIE_SAMESITE="Lax")
app.session_interface = sessions.FlaskSessionInterface(store=sessions.SQLiteStore(os.environ["SESSIONS_DB"]))

@app.get("/count")
def count():
    flask.session["n"] = flask.session.get("n", 0) + 1
    if flask.session["n"] == 1:
        flask.flash(markupsafe.Markup("<b>hi</b>"), "welcome")
    return f"{flask.session['n']} {os.getpid()}"

@app.get("/flashes")
def flashes():
    return repr(flask.get_flashed_messages(with_categories=True))
"""


@pytest.fixture
def gunicorn(tmp_path) -> Iterator[str]:
    """Two gunicorn workers (processes) sharing one SQLiteStore; yields the base URL."""
    (tmp_path / "flask_gunicorn_app.py").write_text(GUNICORN_APP, encoding="utf-8")
    here = os.path.dirname(os.path.abspath(__file__))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=here, SESSIONS_DB=str(tmp_path / "sessions.db"))
    process = spawn([sys.executable, "-m", "gunicorn", "--workers", "2", "--graceful-timeout", "5",
                     "--bind", f"127.0.0.1:{port}", "flask_gunicorn_app:app"], cwd=tmp_path, env=env)
    try:
        if not wait_for(lambda: process.poll() is not None or accepts_connections(port)) or process.poll() is not None:
            fail_to_start(process, "gunicorn")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)
        process.output.close()  # type: ignore[attr-defined]


def test_gunicorn_workers_share_the_session_and_its_types(gunicorn):
    browser = Browser(gunicorn)
    replies = [browser.open("/count") for _ in range(12)]
    assert [reply.body.split()[0] for reply in replies] == [str(n) for n in range(1, 13)]
    assert "SameSite=Lax" in replies[0].set_cookies[0] and "HttpOnly" in replies[0].set_cookies[0]
    # the flash, written by one worker, read back by whichever serves this request: a tuple holding Markup
    assert browser.open("/flashes").body == "[('welcome', Markup('<b>hi</b>'))]"
