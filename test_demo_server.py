"""Tests for demo_server.py: the site driven over real HTTP with urllib + http.cookiejar.

Each test gets its own server on a free port (port 0) in a thread, with a fake clock injected through the
manager, so expiry is tested without sleeping. One smoke test runs the real command in a subprocess.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import http.client
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import demo_server
import sessions
from conftest import Clock, free_port, missing, require_binary, sid_of, stop_process

HERE = Path(__file__).resolve().parent
MAX_AGE = 60


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Response:
    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.text = body.decode("utf-8")


class Client:
    """A browser-like client: one cookie jar, redirects followed unless asked not to."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        cookies = urllib.request.HTTPCookieProcessor(self.jar)
        self.opener = urllib.request.build_opener(cookies)
        self.no_redirect = urllib.request.build_opener(cookies, NoRedirect)

    def request(self, path: str, form=None, method=None, follow=True, data=None, headers=None) -> Response:
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        opener = self.opener if follow else self.no_redirect
        try:
            with opener.open(request, timeout=5) as response:
                return Response(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, error.headers, error.read())

    def get(self, path: str = "/", **kwargs) -> Response:
        return self.request(path, **kwargs)

    def post(self, path: str, form: dict, **kwargs) -> Response:
        return self.request(path, form=form, **kwargs)

    def cookie(self) -> str | None:
        values = [c.value for c in self.jar if c.name == "sid"]
        assert len(values) <= 1
        return values[0] if values else None

    def csrf(self, path: str = "/login") -> str:
        return field(self.get(path).text, "csrf_token")


def field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} field in the page"
    return html.unescape(match.group(1))


def by_id(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert match, f"no element with id {element_id}"
    return html.unescape(match.group(1))


def visits(response: Response) -> int:
    assert response.status == 200, response.text
    return int(by_id(response.text, "visits"))


@pytest.fixture
def demo(request):
    """The site on a free port; parametrize it indirectly with a dict of SessionManager options."""
    threads_before = set(threading.enumerate())
    clock = Clock(time.time())  # the real time: the cookie jar judges Max-Age by it
    options = {"store": sessions.MemoryStore(clock=clock), **getattr(request, "param", {})}
    manager = sessions.SessionManager("test secret", cookie={"max_age": MAX_AGE}, clock=clock, **options)
    server = demo_server.build_server(0, manager, log_requests=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = server.server_address[1]
    demo = type("Demo", (), {})()
    demo.base, demo.clock, demo.manager, demo.port = f"http://127.0.0.1:{port}", clock, manager, port
    demo.client = lambda: Client(demo.base)
    try:
        yield demo
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        # Handler threads finish once their connection closes; none may outlive the test.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and set(threading.enumerate()) - threads_before:
            time.sleep(0.02)
        assert not set(threading.enumerate()) - threads_before, "the demo leaked threads"


def raw_request(port: int, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, dict, str]:
    """A request urllib would refuse to send (bad Content-Length and the like)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode("utf-8")
    finally:
        connection.close()


# The session features ######################################################################################


def test_counter_increments_across_requests(demo):
    client = demo.client()
    first = client.get("/")
    assert visits(first) == 1
    assert by_id(first.text, "state").startswith("new")
    assert client.cookie() is not None
    second = client.get("/")
    assert visits(second) == 2
    assert by_id(second.text, "state").startswith("loaded")
    assert visits(client.get("/")) == 3
    # Same session throughout: same id hash.
    assert by_id(first.text, "sid-hash") == by_id(second.text, "sid-hash")
    # Another browser has its own count.
    assert visits(demo.client().get("/")) == 1


def test_pages_show_a_short_hash_never_the_session_id(demo):
    client = demo.client()
    page = client.get("/").text
    sid = sid_of(client.cookie())
    assert by_id(page, "sid-hash") == hashlib.sha256(sid.encode()).hexdigest()[:8]
    token = field(client.get("/login").text, "csrf_token")
    for path in ("/", "/login", "/pitfall", "/session.json", "/nope"):
        assert sid not in client.get(path).text, path
    client.post("/login", {"csrf_token": token, "username": "alice", "password": "wonderland"})
    sid = sid_of(client.cookie())
    for path in ("/", "/login", "/pitfall", "/session.json"):
        assert sid not in client.get(path).text, path


def log_in_as(client: Client, user: str, password: str, agent: str) -> None:
    token = client.csrf()
    reply = client.post("/login", {"csrf_token": token, "username": user, "password": password},
                        headers={"User-Agent": agent})
    assert user in by_id(reply.text, "user")


def account_rows(page: str) -> list:
    """(device text, handle, is this device) of each row of the Account page's table."""
    rows = re.findall(r'<tr class="session" data-handle="([0-9a-f]+)"><td>(.*?) <code.*?</tr>', page, re.S)
    return [(html.unescape(device), handle, 'id="this-device"' in row)
            for handle, device in rows for row in [page[page.index(f'data-handle="{handle}"'):].split("</tr>", 1)[0]]]


def test_account_lists_where_a_user_is_logged_in_and_logs_out_everywhere_else(demo):
    laptop, phone, tablet, bob = (demo.client() for _ in range(4))
    log_in_as(laptop, "alice", "wonderland", "Laptop Firefox")
    log_in_as(phone, "alice", "wonderland", "Phone Safari")
    log_in_as(tablet, "alice", "wonderland", "Tablet <Chrome>")
    log_in_as(bob, "bob", "builder", "Bob's browser")
    page = laptop.get("/account")
    assert page.status == 200
    rows = account_rows(page.text)
    assert sorted(device for device, _, _ in rows) == ["Laptop Firefox", "Phone Safari", "Tablet <Chrome>"]
    assert [device for device, _, mine in rows if mine] == ["Laptop Firefox"]
    assert "<Chrome>" not in page.text  # the user agent is escaped
    for client in (laptop, phone, tablet):  # the page shows handles, never an id
        assert sid_of(client.cookie()) not in page.text
    # End one session by its handle: the phone is logged out, the others are not.
    phone_handle = next(handle for device, handle, _ in rows if device == "Phone Safari")
    token = field(page.text, "csrf_token")
    ended = laptop.post("/account/end", {"csrf_token": token, "handle": phone_handle})
    assert "ended" in by_id(ended.text, "flash") and len(account_rows(ended.text)) == 2
    assert "alice" not in by_id(phone.get("/").text, "user")
    # Bob's handle cannot be ended from alice's account.
    bob_handle = account_rows(bob.get("/account").text)[0][1]
    assert "had ended already" in by_id(laptop.post("/account/end", {"csrf_token": token, "handle": bob_handle}).text, "flash")
    assert "bob" in by_id(bob.get("/").text, "user")
    # Log out everywhere else: the tablet goes, the laptop stays.
    page = laptop.post("/account/end-others", {"csrf_token": token})
    assert "1 other session(s) ended" in by_id(page.text, "flash")
    assert [device for device, _, _ in account_rows(page.text)] == ["Laptop Firefox"] and 'id="alone"' in page.text
    assert "alice" not in by_id(tablet.get("/").text, "user")
    assert "alice" in by_id(laptop.get("/").text, "user")


def test_account_needs_a_login_and_a_csrf_token(demo):
    client = demo.client()
    page = client.get("/account")
    assert page.status == 200 and "Log in first" in page.text and 'action="/login"' in page.text
    log_in_as(client, "alice", "wonderland", "Firefox")
    assert client.post("/account/end-others", {"csrf_token": "forged"}).status == 403


def test_login_regenerates_the_id_and_keeps_the_count(demo):
    client = demo.client()
    client.get("/")
    client.get("/")
    token = client.csrf()
    before = client.cookie()
    response = client.post("/login", {"csrf_token": token, "username": "alice", "password": "wonderland"})
    after = client.cookie()
    assert after != before and sid_of(after) != sid_of(before)
    # Redirected home: the login was saved before the redirect, the count kept (+1 for this visit).
    assert response.status == 200
    assert visits(response) == 3
    assert "alice" in by_id(response.text, "flash")
    assert "alice" in by_id(response.text, "user")
    # The flash is one-time.
    assert 'id="flash"' not in client.get("/").text
    data = json.loads(client.get("/session.json").text)
    assert data["user"] == "alice" and data["visits"] == 4
    assert data["csrf_token"] != token  # a new token with the new privileges
    # The old id is dead: a browser still holding it gets a fresh session.
    stale = urllib.request.Request(demo.base + "/session.json", headers={"Cookie": f"sid={before}"})
    with urllib.request.urlopen(stale, timeout=5) as reply:
        assert json.loads(reply.read()) == {}
    assert len(demo.manager.store) == 1


def test_wrong_password_redirects_to_the_form_once_and_changes_nothing(demo):
    client = demo.client()
    client.get("/")
    token = client.csrf()
    cookie, data = client.cookie(), client.get("/session.json").text
    response = client.post("/login", {"csrf_token": token, "username": "alice", "password": "nope"}, follow=False)
    # Post/Redirect/Get: reloading the page that follows re-posts nothing.
    assert response.status == 303 and response.headers["Location"] == "/login"
    form = client.get("/login")
    assert "Wrong user name or password" in by_id(form.text, "error")
    assert field(form.text, "csrf_token") == token
    assert 'value="alice"' in form.text  # the user name is kept, the password not
    assert 'id="error"' not in client.get("/login").text  # shown once
    assert client.cookie() == cookie
    assert client.get("/session.json").text == data
    unknown = client.post("/login", {"csrf_token": token, "username": "mallory", "password": "x"})
    assert unknown.status == 200 and "Wrong user name or password" in by_id(unknown.text, "error")
    assert client.get("/session.json").text == data


@pytest.mark.parametrize("path", ["/login", "/logout"])
def test_forged_or_missing_csrf_token_is_403(demo, path):
    client = demo.client()
    client.get("/")
    token = client.csrf()
    data = client.get("/session.json").text
    other = demo.client()
    other_token = other.csrf()
    for form in (
        {"username": "alice", "password": "wonderland"},  # missing
        {"csrf_token": "", "username": "alice", "password": "wonderland"},  # empty
        {"csrf_token": token[:-1] + ("A" if token[-1] != "A" else "B"), "username": "alice", "password": "wonderland"},
        {"csrf_token": other_token, "username": "alice", "password": "wonderland"},  # another session's
        {"csrf_token": "é" * 43, "username": "alice", "password": "wonderland"},  # non-ASCII
    ):
        response = client.post(path, form)
        assert response.status == 403, form
        assert "CSRF" in by_id(response.text, "error")
    assert client.get("/session.json").text == data  # not logged in, not logged out
    # A browser without a session has no token to match.
    assert demo.client().post(path, {"csrf_token": token, "username": "alice", "password": "wonderland"}).status == 403


def test_logout_destroys_the_session_empties_the_jar_and_flashes(demo):
    client = demo.client()
    client.get("/")
    client.post("/login", {"csrf_token": client.csrf(), "username": "bob", "password": "builder"})
    page = client.get("/").text
    old_hash = by_id(page, "sid-hash")
    token = field(page, "csrf_token")
    response = client.post("/logout", {"csrf_token": token}, follow=False)
    assert response.status == 303
    assert response.headers["Location"] == "/?flash=logged-out"
    assert list(client.jar) == []  # the Set-Cookie expired the cookie
    assert len(demo.manager.store) == 0  # and the record is gone
    # Following the redirect: the flash, and a brand-new session.
    home = client.get(response.headers["Location"])
    assert "logged out" in by_id(home.text, "flash")
    assert visits(home) == 1
    assert by_id(home.text, "state").startswith("new")
    assert by_id(home.text, "sid-hash") != old_hash
    assert "bob" not in by_id(home.text, "user")


def test_flash_from_the_url_is_never_echoed(demo):
    client = demo.client()
    for value in ("<script>alert(1)</script>", "You won a prize", "logged-out2"):
        page = client.get("/?flash=" + urllib.parse.quote(value)).text
        assert 'id="flash"' not in page
        assert "<script>" not in page and "prize" not in page


def test_expiry_with_an_injected_clock_starts_a_fresh_session(demo):
    client = demo.client()
    first = client.get("/")
    client.get("/")
    demo.clock.advance(MAX_AGE - 1)  # idle for less than max-age: still alive, and the visit restarts it
    assert visits(client.get("/")) == 3
    demo.clock.advance(MAX_AGE - 1)
    page = client.get("/")
    assert visits(page) == 4
    assert by_id(page.text, "expires-in") == str(MAX_AGE)
    demo.clock.advance(MAX_AGE + 1)  # idle past max-age: the server no longer knows the session
    assert client.cookie() is not None  # the browser still sends its cookie...
    fresh = client.get("/")
    assert visits(fresh) == 1  # ...but a new session starts
    assert by_id(fresh.text, "state").startswith("new")
    assert by_id(fresh.text, "sid-hash") != by_id(first.text, "sid-hash")


def test_pitfall_page_shows_the_error_the_library_raised(demo):
    # The message the library raises for a write after commit, obtained independently of the demo.
    session = demo.manager.open(None)
    session["x"] = 1
    demo.manager.commit(session)
    with pytest.raises(sessions.SessionClosedError) as raised:
        session["x"] = 2
    expected = f"SessionClosedError: {raised.value}"

    client = demo.client()
    page = client.get("/pitfall")
    assert page.status == 200
    assert by_id(page.text, "raised") == expected
    assert by_id(page.text, "pitfall-views") == "1"
    page = client.get("/pitfall")
    assert by_id(page.text, "pitfall-views") == "2"  # the correct way is saved
    data = json.loads(client.get("/session.json").text)
    assert data["pitfall_views"] == 2
    assert data["last_page"] == "/pitfall"  # the late write was not saved (and did not pass silently)
    # Keep-alive still works after the chunked pitfall response.
    connection = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=5)
    try:
        for path in ("/pitfall", "/", "/pitfall"):
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 200 and response.read().endswith(b"</html>\n")
    finally:
        connection.close()


def test_session_json_returns_the_session_data(demo):
    client = demo.client()
    empty = client.get("/session.json")
    assert empty.status == 200
    assert empty.headers["Content-Type"].startswith("application/json")
    assert json.loads(empty.text) == {}
    assert client.cookie() is None  # reading an empty session creates nothing
    client.get("/")
    client.get("/")
    data = json.loads(client.get("/session.json").text)
    assert data["visits"] == 2
    assert set(data) == {"visits", "csrf_token"}


# Many tabs ################################################################################################


class WholeRecordStore(sessions.MemoryStore):
    """What express-session (and Flask's, Django's, Starlette's sessions) do, for comparison: a request
    writes back the whole record as it loaded it, with its own change applied (the last write wins)."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded = threading.local()  # the record each request thread loaded

    def get(self, sid):
        found = super().get(sid)
        self.loaded.record = found[0] if isinstance(found, tuple) else found
        return found

    def update(self, sid, change, expires):
        if super().get(sid) is None:
            return False
        self.set(sid, change(self.loaded.record), expires)
        return True


def many_tabs_round(client: Client) -> list:
    """What the page's script does: forget the last round, send TABS writes at once, read what was kept."""
    page = client.get("/many-tabs")
    token = html.unescape(re.search(r'data-csrf="([^"]*)"', page.text).group(1))
    assert client.post("/many-tabs/start", {"csrf_token": token}).status == 204
    start = threading.Barrier(demo_server.TABS)

    def write(tab: int) -> int:
        start.wait(5)
        return client.post("/many-tabs/write", {"csrf_token": token, "tab": str(tab)}).status

    with ThreadPoolExecutor(demo_server.TABS) as pool:
        assert set(pool.map(write, range(1, demo_server.TABS + 1))) == {204}
    result = json.loads(client.get("/many-tabs/result").text)
    assert result["of"] == demo_server.TABS
    return result["kept"]


def test_many_tabs_keeps_every_one_of_the_concurrent_writes(demo):
    client = demo.client()
    assert many_tabs_round(client) == list(range(1, demo_server.TABS + 1))
    stored = json.loads(client.get("/session.json").text)
    assert {f"tab-{tab:02d}" for tab in range(1, demo_server.TABS + 1)} <= set(stored)
    assert many_tabs_round(client) == list(range(1, demo_server.TABS + 1))  # a second round, from scratch


@pytest.mark.parametrize("demo", [{"store": WholeRecordStore()}], indirect=True)
def test_many_tabs_with_whole_record_writes_keeps_only_some(demo):
    """The same round where the last write wins: what the page's sentence says of other libraries."""
    assert len(many_tabs_round(demo.client())) < demo_server.TABS


def test_many_tabs_page_creates_the_session_and_runs_only_its_own_script(demo):
    client = demo.client()
    page = client.get("/many-tabs")
    assert client.cookie() is not None  # the session exists before the requests race
    assert '<script src="/many-tabs.js"></script>' in page.text and "<script>" not in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "default-src 'none'" in policy
    assert "script-src" not in client.get("/").headers["Content-Security-Policy"]  # other pages: no script
    script = client.get("/many-tabs.js")
    assert script.status == 200 and script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert "/many-tabs/write" in script.text and "last write wins" in page.text


def test_many_tabs_refuses_a_forged_token_and_a_bad_tab(demo):
    client = demo.client()
    token = html.unescape(re.search(r'data-csrf="([^"]*)"', client.get("/many-tabs").text).group(1))
    assert client.post("/many-tabs/write", {"csrf_token": "forged", "tab": "1"}).status == 403
    assert client.post("/many-tabs/start", {"csrf_token": "forged"}).status == 403
    for tab in ("0", "21", "x", "1.5", ""):
        assert client.post("/many-tabs/write", {"csrf_token": token, "tab": tab}).status == 400, tab
    assert client.get("/many-tabs/write").status == 405
    assert json.loads(client.get("/many-tabs/result").text) == {"kept": [], "of": demo_server.TABS}


# What a newcomer sees ######################################################################################

PAGES = [  # path, method, form, status
    ("/", "GET", None, 200),
    ("/login", "GET", None, 200),
    ("/pitfall", "GET", None, 200),
    ("/many-tabs", "GET", None, 200),
    ("/nope", "GET", None, 404),
    ("/logout", "GET", None, 405),
    ("/login", "POST", {"csrf_token": "forged", "username": "alice", "password": "wonderland"}, 403),
]


def check_layout(response: Response, status: int) -> str:
    """The structure every HTML page shares; returns the nav's account status."""
    assert response.status == status, response.text
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>\n")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    nav = re.search(r"<nav>(.*?)</nav>", page, re.S).group(1)
    assert re.findall(r'href="([^"]+)"', nav) == ["/", "/login", "/account", "/pitfall", "/many-tabs", "/session.json"]
    assert page.count("<h1>") == 1
    match = re.search(r'<span class="who muted" id="who">(.*?)</span></nav>', page)
    assert match, "the nav ends with the account status"
    return re.sub(r"<[^>]+>", "", match.group(1))


def log_in(client: Client, user: str = "alice", password: str = "wonderland") -> Response:
    response = client.post("/login", {"csrf_token": client.csrf(), "username": user, "password": password})
    assert "logged in as" in response.text
    return response


def test_every_page_has_the_layout_and_the_nav_knows_the_user(demo):
    """Each page fetched over a real socket, error pages included, anonymous and then logged in."""
    client = demo.client()
    for expected in ("not logged in", "logged in as alice"):
        for path, method, form, status in PAGES:
            response = client.request(path, method=method, form=form)
            assert check_layout(response, status) == expected, (path, method)
        if expected == "not logged in":
            log_in(client)


def test_store_outage_shows_the_demo_500_page_and_the_site_recovers(demo, monkeypatch, caplog):
    client = demo.client()
    log_in(client)

    def down(*args):
        raise ConnectionRefusedError("store is down")

    with monkeypatch.context() as patch:
        patch.setattr(demo.manager.store, "get", down)
        for path in ("/", "/pitfall"):
            response = client.get(path)
            assert check_layout(response, 500) == "session unavailable", path
            assert "session store (MemoryStore) is not answering" in by_id(response.text, "error")
            assert "Traceback" not in response.text
        assert check_layout(client.get("/nope"), 404) == "session unavailable"  # the error page still shows
    assert "session store failure" in caplog.text and "ConnectionRefusedError" in caplog.text
    page = client.get("/")  # the store is back: so is the session
    assert check_layout(page, 200) == "logged in as alice"
    assert by_id(page.text, "state").startswith("loaded")


def test_a_failed_save_shows_the_demo_500_page_without_a_cookie(demo, monkeypatch):
    def full(*args):
        raise OSError("disk full")

    client = demo.client()
    with monkeypatch.context() as patch:
        patch.setattr(demo.manager.store, "set", full)  # a new session's first save, in end_headers
        response = client.get("/", follow=False)
        assert check_layout(response, 500) == "session unavailable"
        assert "Set-Cookie" not in response.headers
        assert client.cookie() is None
    assert visits(client.get("/")) == 1


def test_a_failed_save_on_an_error_page_is_the_store_500_page(demo, monkeypatch):
    client = demo.client()
    log_in(client)
    with monkeypatch.context() as patch:
        patch.setattr(demo.manager.store, "touch", lambda *args: 1 / 0)  # the 404 page's commit touches
        response = client.get("/nope")
    assert check_layout(response, 500) == "session unavailable"
    assert "session store (MemoryStore) is not answering" in by_id(response.text, "error")
    assert check_layout(client.get("/"), 200) == "logged in as alice"


def test_a_first_visit_is_not_offered_to_end_a_session_that_did_not_exist(demo):
    client = demo.client()
    first = client.get("/")
    assert by_id(first.text, "state").startswith("new: a first visit")
    assert "End this session" not in first.text and 'id="expired"' not in first.text
    assert "End this session" in client.get("/").text  # now there is one to end


def test_an_expired_session_is_told_so_not_taken_for_a_first_visit(demo):
    client = demo.client()
    client.get("/")
    demo.clock.advance(MAX_AGE + 1)  # the store forgot it; this jar still sends the cookie
    page = client.get("/")
    assert visits(page) == 1
    assert "your session expired" in by_id(page.text, "state")
    assert "Your session expired" in by_id(page.text, "expired")
    # A real browser drops the cookie when it runs out and sends none: the marker cookie tells.
    client.jar.clear(domain="127.0.0.1", path="/", name="sid")
    page = client.get("/")
    assert "cookie ran out" in by_id(page.text, "state") and 'id="expired"' in page.text
    # A cookie this server did not sign (say it restarted with a new random secret).
    stranger = demo.client()
    request = urllib.request.Request(demo.base + "/", headers={"Cookie": "sid=s%3Aabc.def"})
    with stranger.opener.open(request, timeout=5) as reply:
        text = reply.read().decode()
    assert "not signed with this server's secret" in by_id(text, "state") and 'id="expired"' in text


def test_after_logout_the_next_visit_is_a_first_visit_again(demo):
    client = demo.client()
    log_in(client)
    client.post("/logout", {"csrf_token": field(client.get("/").text, "csrf_token")})
    assert 'id="expired"' not in client.get("/").text


def test_a_form_posted_after_the_session_expired_says_so(demo):
    client = demo.client()
    client.get("/")
    token = client.csrf()
    demo.clock.advance(MAX_AGE + 1)
    response = client.post("/login", {"csrf_token": token, "username": "alice", "password": "wonderland"})
    assert response.status == 403
    assert by_id(response.text, "error").startswith("Your session expired")
    # The same when the browser dropped the cookie (no session cookie, but the demo's marker).
    client.get("/")
    token = client.csrf()
    client.jar.clear(domain="127.0.0.1", path="/", name="sid")
    response = client.post("/login", {"csrf_token": token, "username": "alice", "password": "wonderland"})
    assert response.status == 403 and by_id(response.text, "error").startswith("Your session expired")
    stranger = demo.client().post("/login", {"csrf_token": token, "username": "alice", "password": "wonderland"})
    assert by_id(stranger.text, "error").startswith("The form's CSRF token is missing or wrong")


def test_expiry_rows_without_rolling_the_cookie_can_run_out_first(demo):
    page = demo.client().get("/").text
    assert by_id(page, "rolling") == "off"
    assert by_id(page, "expires-in") == str(MAX_AGE)
    assert "every request restarts it" in page
    cookie = re.search(r'id="expires-cookie">(.*?)</td>', page).group(1)
    assert "sent the cookie" in cookie and "restarts only the store's clock" in cookie


@pytest.mark.parametrize("demo", [{"rolling": True}], indirect=True)
def test_expiry_rows_with_rolling_the_cookie_slides_too(demo):
    client = demo.client()
    client.get("/")
    page = client.get("/").text
    assert by_id(page, "rolling") == "on"
    assert "every response re-sends the cookie" in by_id(page, "expires-cookie")


def test_pitfall_samples_read_whole_at_phone_width():
    """45 monospace characters fit a 390 px wide phone screen (12.5 px font); the page shows the samples."""
    for sample in (demo_server.PITFALL_WRONG, demo_server.PITFALL_RIGHT):
        assert max(map(len, sample.splitlines())) <= 45


# Bad input ################################################################################################


def test_unknown_path_is_a_404_page(demo):
    client = demo.client()
    for path in ("/nope", "/login/", "/session.json.bak", "/%00", "/<script>"):
        response = client.get(path)
        assert response.status == 404, path
        assert "<script>" not in response.text
        assert response.headers["Content-Type"].startswith("text/html")
    assert client.post("/nope", {"a": "b"}).status == 404


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("POST", "/", "GET, HEAD, OPTIONS"),
        ("PUT", "/", "GET, HEAD, OPTIONS"),
        ("DELETE", "/session.json", "GET, HEAD, OPTIONS"),
        ("GET", "/logout", "POST, OPTIONS"),
        ("PATCH", "/login", "GET, HEAD, POST, OPTIONS"),
        ("POST", "/pitfall", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_method_is_405_with_allow(demo, method, path, allow):
    response = demo.client().request(path, method=method, data=b"x=1" if method != "GET" else None)
    assert response.status == 405
    assert response.headers["Allow"] == allow
    assert method in by_id(response.text, "error")


def test_head_and_options(demo):
    status, headers, body = raw_request(demo.port, "HEAD", "/", {})
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 0
    status, headers, body = raw_request(demo.port, "OPTIONS", "/logout", {})
    assert status == 204 and headers["Allow"] == "POST, OPTIONS"


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "headers, body, status, message",
    [
        ({"Content-Type": FORM, "Content-Length": "abc"}, b"", 400, "Content-Length"),
        ({"Content-Type": FORM, "Content-Length": "-5"}, b"", 400, "Content-Length"),
        ({"Content-Type": FORM, "Content-Length": "99999999999999999999"}, b"", 400, "Content-Length"),
        ({"Content-Type": FORM}, b"", 411, "Content-Length"),
        ({"Content-Type": FORM, "Transfer-Encoding": "chunked"}, b"3\r\na=b\r\n0\r\n\r\n", 411, "Content-Length"),
        ({"Content-Type": FORM, "Content-Length": "5000"}, b"a=" + b"x" * 4998, 413, "too large"),
        ({"Content-Type": FORM}, b"username=\xff\xfe", 400, "UTF-8"),
        ({"Content-Type": FORM}, b"username=%FF", 400, "UTF-8"),
        ({"Content-Type": FORM}, b"no-equals-sign", 400, "Malformed"),
        ({"Content-Type": FORM}, b"&".join(b"f%d=1" % i for i in range(50)), 400, "Malformed"),
        ({"Content-Type": FORM}, b"a=1&a=2", 400, "more than once"),
        ({"Content-Type": "application/json"}, b'{"username": "alice"}', 415, "urlencoded"),
        ({}, b"username=alice", 415, "urlencoded"),
    ],
)
def test_malformed_form_gets_a_clear_error(demo, headers, body, status, message):
    headers = dict(headers)
    if "Content-Length" not in headers and "Transfer-Encoding" not in headers and body:
        headers["Content-Length"] = str(len(body))
    got, response_headers, text = raw_request(demo.port, "POST", "/login", headers, body)
    assert got == status
    assert message in by_id(text, "error")
    assert "Traceback" not in text


def test_refused_bodies_leave_the_connection_usable(demo):
    """A 405 or 413 answered without reading the body drops it, so keep-alive goes on cleanly."""
    connection = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=5)
    try:
        for method, path, body, status in (
            ("POST", "/", b"x=1", 405),
            ("POST", "/login", b"a=" + b"x" * 10000, 413),
            ("PUT", "/nope", b"y" * 100, 404),
            ("GET", "/", None, 200),
        ):
            connection.request(method, path, body=body, headers={"Content-Type": FORM})
            response = connection.getresponse()
            assert response.status == status
            assert response.getheader("Connection") != "close"
            response.read()
    finally:
        connection.close()


def test_missing_form_fields_are_400(demo):
    client = demo.client()
    token = client.csrf()
    for form in ({"csrf_token": token}, {"csrf_token": token, "username": "alice"}):
        response = client.post("/login", form)
        assert response.status == 400
        assert "missing field" in by_id(response.text, "error")


def test_server_error_is_a_500_page_without_traceback(demo, monkeypatch, caplog):
    def broken(self):
        raise RuntimeError("boom: internal detail")

    monkeypatch.setattr(demo_server.DemoHandler, "page_session_json", broken)
    response = demo.client().get("/session.json")
    assert response.status == 500
    assert "boom" not in response.text and "Traceback" not in response.text
    assert "RuntimeError" in caplog.text  # logged for the operator


def test_store_failure_is_a_clean_500(demo, monkeypatch):
    def broken(sid):
        raise OSError("disk on fire")

    client = demo.client()
    client.get("/")
    token = field(client.get("/").text, "csrf_token")
    with monkeypatch.context() as patch:
        patch.setattr(demo.manager.store, "destroy", broken)
        response = client.post("/logout", {"csrf_token": token})
    assert response.status == 500
    assert "disk on fire" not in response.text and "Traceback" not in response.text
    assert visits(client.get("/")) == 3  # the session survived the failed logout


# The real command ##########################################################################################


def start_demo(*args: str, env_secret: str | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port(consecutive=2 if "--with-express" in args else 1)  # the twin listens on the next port
    env = {k: v for k, v in os.environ.items() if k != "SESSION_SECRET"}
    if env_secret is not None:
        env["SESSION_SECRET"] = env_secret
    process = subprocess.Popen(
        [sys.executable, str(HERE / "demo_server.py"), "--port", str(port), *args],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=None if sys.platform == "win32" else _as_from_a_terminal,
    )
    return process, port


def _as_from_a_terminal() -> None:
    """Run in the demo's process before it starts: Ctrl+C (SIGINT) does what it does for a command typed at a
    terminal. A test run started in the background (``cmd &`` in a script) ignores SIGINT, and its children
    would inherit that, so the Ctrl+C test would wait for a demo that never hears it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_home(process: subprocess.Popen, port: int) -> str:
    deadline = time.monotonic() + 10
    while True:
        assert process.poll() is None, process.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                return response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_smoke_python_demo_server_serves_the_home_page():
    process, port = start_demo()
    try:
        page = wait_for_home(process, port)
        assert 'id="visits">1<' in page
        process.terminate()
        out, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert f"http://127.0.0.1:{port}/" in out
    assert by_id(page, "store").startswith("MemoryStore")  # --store memory is the default
    assert "Ctrl+C to stop" in out
    assert "random secret" in out  # no secret given: the notice
    assert "Traceback" not in err
    assert process.returncode == 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX-only")
def test_ctrl_c_stops_cleanly_and_flags_are_honoured():
    process, port = start_demo("--max-age", "5", "--rolling", env_secret="from the environment")
    try:
        page = wait_for_home(process, port)
        assert 'id="expires-in">5<' in page
        assert by_id(page, "rolling") == "on"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "random secret" not in out  # SESSION_SECRET was used
    assert "from the environment" not in out + err  # and never printed
    assert "Traceback" not in err
    assert process.returncode == 0


def test_port_in_use_is_a_clear_message():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(HERE / "demo_server.py"), "--port", str(port), "--secret", "s"],
            cwd=HERE, capture_output=True, text=True, timeout=10,
        )
    assert result.returncode == 1
    assert "Cannot listen" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--store", "bogus"], "--store: expected memory, sqlite:PATH, redis://HOST:PORT/DB or "
                           "postgresql://[USER@]HOST[:PORT]/DB, not 'bogus'"),
    (["--store", "sqlite:"], "--store: expected memory"),
    (["--store", "redis://127.0.0.1:99999/0"], "--store: expected memory"),
    (["--port", "eighty"], "--port: invalid int value"),
    (["--host", "0.0.0.0"], "unrecognized arguments: --host"),  # the demo listens on 127.0.0.1 only
    (["--with-express"], "--with-express needs --store redis://HOST:PORT/DB"),
    (["--with-express", "--store", "sqlite:x.db"], "--with-express needs --store redis://HOST:PORT/DB"),
])
def test_a_bad_option_is_a_one_line_usage_error(args, message):
    result = subprocess.run([sys.executable, str(HERE / "demo_server.py"), *args, "--secret", "s"],
                            cwd=HERE, capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("demo_server.py: error: ") and message in result.stderr
    assert result.stdout == ""


def test_redis_store_without_the_redis_package_is_one_clear_line(tmp_path):
    (tmp_path / "redis.py").write_text('raise ImportError("No module named \'redis\'")\n')  # as if not installed
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, str(HERE / "demo_server.py"), "--store", "redis://127.0.0.1:6379/0", "--secret", "s"],
        cwd=HERE, env=env, capture_output=True, text=True, timeout=10,
    )
    assert result.returncode == 1
    assert result.stderr == ("Cannot use --store redis://127.0.0.1:6379/0: it needs the redis package "
                             "(python3 -m pip install redis)\n")


# --store sqlite / redis: these run once sessions.py has SQLiteStore / RedisStore (branch stores).

def home_store_and_visits(port: int, jar: http.cookiejar.CookieJar) -> tuple:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    try:
        with opener.open(f"http://127.0.0.1:{port}/", timeout=10) as response:
            page = response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, by_id(error.read().decode(), "error")
    return by_id(page, "store"), int(by_id(page, "visits"))


def test_sqlite_store_keeps_sessions_across_a_restart(tmp_path):
    jar = http.cookiejar.CookieJar()
    path = tmp_path / "sessions.db"
    for expected in (1, 2):
        process, port = start_demo("--store", f"sqlite:{path}", env_secret="kept across restarts")
        try:
            wait_for_home(process, port)  # a visit without the jar
            assert home_store_and_visits(port, jar) == (f"SQLiteStore ({path})", expected)
        finally:
            stop_process(process)


def test_postgres_store_keeps_sessions_across_a_restart(postgres_server, postgres_dsn):
    jar = http.cookiejar.CookieJar()
    url = postgres_server.url
    shown = f"PostgresStore (postgresql://127.0.0.1:{postgres_server.port}/postgres, connect-pg-simple's table)"
    for expected in (1, 2):
        process, port = start_demo("--store", url, env_secret="kept across restarts")
        try:
            wait_for_home(process, port)
            assert home_store_and_visits(port, jar) == (shown, expected)
        finally:
            stop_process(process)


def test_a_postgres_url_is_checked_and_its_password_never_shown():
    assert demo_server.store_option("postgresql://u:secret@db.example:5433/app")
    assert demo_server.postgres_address("postgresql://u:secret@db.example:5433/app") == \
        "postgresql://db.example:5433/app"
    for bad in ("postgresql://", "postgresql://host", "postgres://host:99999/db", "mysql://host/db"):
        with pytest.raises(argparse.ArgumentTypeError):
            demo_server.store_option(bad)


def test_redis_store_outage_is_the_500_page_and_the_site_recovers(redis_server):
    jar = http.cookiejar.CookieJar()
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    process, port = start_demo("--store", url)
    try:
        wait_for_home(process, port)
        assert home_store_and_visits(port, jar) == (f"RedisStore ({url})", 1)
        assert home_store_and_visits(port, jar) == (f"RedisStore ({url})", 2)
        redis_server.stop()
        status, message = home_store_and_visits(port, jar)
        assert status == 500 and "session store (RedisStore" in message
        redis_server.start()  # an empty Redis (no persistence): the session is gone, the site is back
        assert home_store_and_visits(port, jar) == (f"RedisStore ({url})", 1)
    finally:
        stop_process(process)


# --with-express: the Express twin shares the sessions ######################################################


def express_get(port: int, jar: http.cookiejar.CookieJar, path: str, body: dict | None = None) -> dict:
    """A request to fixtures/express/app.js (JSON in, JSON out) with the browser's cookie jar."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read())


def refuses_connections(port: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_with_express_the_twin_opens_the_same_session_on_the_next_port(redis_server):
    require_binary("node")
    if not (HERE / "fixtures" / "express" / "node_modules" / "express-session").is_dir():
        missing("fixtures/express/node_modules is missing: run `npm ci --prefix fixtures/express`")
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    process, port = start_demo("--store", url, "--with-express", env_secret="shared with express")
    express = port + 1
    try:
        wait_for_home(process, port)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(f"http://127.0.0.1:{port}/", timeout=10) as response:
            page = response.read().decode()
        link = re.search(r'<a id="express" href="([^"]+)"', page).group(1)
        assert link == f"http://127.0.0.1:{express}/get"
        on_node = express_get(express, jar, "/get")  # the link, with the browser's cookie
        assert on_node["id"].startswith(by_id(page, "sid-hash"))  # the same session id
        assert on_node["data"]["visits"] == 1
        express_get(express, jar, "/set", {"written_by": "express"})  # and back: Node writes, Python reads
        with opener.open(f"http://127.0.0.1:{port}/session.json", timeout=10) as response:
            assert json.loads(response.read())["written_by"] == "express"
        process.terminate()
        out, err = process.communicate(timeout=15)
    finally:
        stop_process(process)
    assert f"http://127.0.0.1:{express}/get" in out
    assert "Traceback" not in err and process.returncode == 0
    assert refuses_connections(express), "the Express twin outlived the demo"


def test_with_express_without_node_is_one_clear_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no node on this PATH
    result = subprocess.run(
        [sys.executable, str(HERE / "demo_server.py"), "--port", "0", "--store", "redis://127.0.0.1:6379/0",
         "--with-express", "--secret", "s"], cwd=HERE, env=env, capture_output=True, text=True, timeout=10)
    assert result.returncode == 1
    assert result.stderr == "Cannot start the Express twin: node is not installed\n"
