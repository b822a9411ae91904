"""Django: a real project (fixtures/django_project: auth, messages, admin, CSRF tokens in the session) switched
to sessions.py by its settings alone.

- Its own Django TestCase suite (test client login/force_login/logout/client.session, messages across
  redirects, async views with alogin, SessionBase's API) passes identically on Django's session middleware
  and engine and on sessions.py's.
- Served by real servers (wsgiref for WSGI, uvicorn for ASGI), a urllib browser with a cookie jar logs into
  the admin, gets messages across a redirect and logs in through an async view, on both backends; with
  sessions.py the cookie is express-session's and the record is in the project's SQLite store. That store
  refuses calls on a running event loop, so every async path proves it is kept off the loop.
- The system checks name each setting that cannot apply as written; the admin needs no silenced check.

Django's settings are process-wide, so the project always runs in its own processes, stopped by their PIDs.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import http.cookies
import os
import re
import string
import subprocess
import sys
import urllib.parse
from typing import Dict, Iterator, List, Tuple

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import sessions
from test_frameworks import Browser, fail_to_start, ready_port, spawn
from conftest import stop_process
from test_stores import pg_rows

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.join(HERE, "fixtures", "django_project")
BACKENDS = ["django", "sessions.py"]
SUITE_TIMEOUT = 300


def project_env(backend: str, state: str, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    return dict(env, DJANGO_SESSIONS=backend, DJANGO_PROJECT_STATE=state, PYTHONPATH=HERE, **extra)


def manage(backend: str, state: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT, env=project_env(backend, state, **extra),
                          capture_output=True, text=True, timeout=SUITE_TIMEOUT)


# The project's own test suite, on both backends ############################################################

RESULT = re.compile(r"^test\w* \(([\w.]+)\) \.\.\. (\w+)$", re.M)  # "test_x (project.tests.C.test_x) ... ok"


@pytest.fixture(scope="module")
def suite_results(tmp_path_factory) -> Dict[str, Tuple[subprocess.CompletedProcess, Dict[str, str]]]:
    """``manage.py test -v 2`` of the project on each backend: the run, and each test's outcome."""
    results = {}
    for backend in BACKENDS:
        run = manage(backend, str(tmp_path_factory.mktemp(backend)), "test", "-v", "2", "--noinput")
        outcomes = dict(RESULT.findall(run.stderr))
        results[backend] = run, outcomes
    return results


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_project_suite_passes(suite_results, backend):
    run, outcomes = suite_results[backend]
    assert run.returncode == 0, run.stderr[-4000:]
    assert len(outcomes) >= 40 and set(outcomes.values()) == {"ok"}, outcomes
    assert "System check identified no issues (0 silenced)." in run.stdout + run.stderr  # admin.E410 too


def test_the_project_suite_runs_the_same_tests_with_the_same_outcomes_on_both(suite_results):
    assert suite_results["django"][1] == suite_results["sessions.py"][1]


# Real servers ###############################################################################################

SERVERS = ["wsgi", "asgi"]


@contextlib.contextmanager
def serve(backend: str, server: str, state: str) -> Iterator[str]:
    """The project under wsgiref or uvicorn in its own process, on a port the OS picks; stopped by its PID."""
    process = spawn([sys.executable, os.path.join(PROJECT, "serve.py"), server],
                    env=project_env(backend, state, PORT="0"), ready_line=True)
    try:
        port = ready_port(process)
        if port is None:
            fail_to_start(process, f"the Django project ({backend}, {server})")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def session_cookie(browser: Browser) -> str:
    (value,) = [cookie.value for cookie in browser.jar if cookie.name == "sessionid"]
    return value


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, html[:2000]
    return match.group(1)


@pytest.fixture(scope="module", params=[(b, s) for b in BACKENDS for s in SERVERS], ids=lambda p: "-".join(p))
def site(request, tmp_path_factory) -> Iterator[Tuple[str, str, str]]:
    backend, server = request.param
    state = str(tmp_path_factory.mktemp(f"{backend}-{server}"))
    with serve(backend, server, state) as base:
        yield base, backend, state


def test_admin_login_through_a_real_server(site):
    base, _, _ = site
    browser = Browser(base)
    page = browser.open("/admin/login/?next=/admin/")
    reply = browser.open("/admin/login/?next=/admin/",
                         {"username": "admin", "password": "pw", "csrfmiddlewaretoken": csrf_token(page.body)})
    assert reply.status == 200 and "Site administration" in reply.body
    assert "Site administration" in browser.open("/admin/").body


def test_messages_across_a_redirect_through_a_real_server(site):
    browser = Browser(site[0])
    assert browser.open("/flash").body == "saved"
    assert browser.open("/show").body == ""


def test_async_view_alogin_through_a_real_server(site):
    browser = Browser(site[0])
    token = browser.open("/form").body
    reply = browser.open("/alogin", {"username": "alice", "password": "pw", "csrfmiddlewaretoken": token})
    assert (reply.status, reply.body) == (200, "alice")  # /alogin redirects to the async /awhoami
    assert browser.open("/whoami").body == "alice"
    assert browser.open("/alogout").body == "bye"
    assert browser.open("/awhoami").body == "anonymous"


def test_async_views_await_an_async_store_on_the_loop_under_uvicorn(tmp_path, postgres_server, postgres_dsn):
    """With an AsyncPostgresStore the project's store refuses any call off the event loop's thread: the
    async views' alogin/alogout (acycle_key, aflush) and the middleware's read and commit await it there,
    while Django's sync middleware (CSRF, auth) read the session the middleware read before them."""
    pytest.importorskip("psycopg_pool")
    process = spawn([sys.executable, os.path.join(PROJECT, "serve.py"), "asgi"], ready_line=True,
                    env=project_env("sessions.py", str(tmp_path), PORT="0", DJANGO_ASYNC_STORE_DSN=postgres_server.url))
    try:
        port = ready_port(process)
        if port is None:
            fail_to_start(process, "the Django project on an async store")
        browser = Browser(f"http://127.0.0.1:{port}")
        token = browser.open("/form").body
        reply = browser.open("/alogin", {"username": "alice", "password": "pw", "csrfmiddlewaretoken": token})
        assert (reply.status, reply.body) == (200, "alice")
        assert browser.open("/whoami").body == "alice"  # a sync view reads what was read on the loop
        assert pg_rows(postgres_dsn, "SELECT count(*) FROM session") == [(1,)]  # alice's session, stored
        assert browser.open("/alogout").body == "bye"
        assert browser.open("/awhoami").body == "anonymous"
    finally:
        stop_process(process)
    assert pg_rows(postgres_dsn, "SELECT count(*) FROM session") == [(0,)]  # logged out: nothing left


def test_sessions_py_cookie_and_record_through_a_real_server(site):
    base, backend, state = site
    if backend != "sessions.py":
        pytest.skip("sessions.py's cookie and store")
    browser = Browser(base)
    reply = browser.open("/vary")
    (set_cookie,) = reply.set_cookies
    assert re.match(r"sessionid=s%3A[\w-]+\.[\w%]+; ", set_cookie)  # express-session's signed value
    assert "Max-Age=1209600" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    assert reply.headers.get_all("Vary") == ["Accept-Language, cookie"]  # one header, Cookie merged in
    assert reply.headers["Cache-Control"] == 'no-cache="Set-Cookie"'
    signed = urllib.parse.unquote(session_cookie(browser))
    sid = sessions.unsign(signed[2:], "django-project test secret, long enough to be taken for a real one 1234567890")
    assert sid in sessions.SQLiteStore(os.path.join(state, "sessions.sqlite3")).ids()


def test_a_cookie_that_names_no_session_is_deleted_through_a_real_server(site):
    """Django's rule: a request whose cookie named no session and whose session stays empty loses the cookie."""
    browser = Browser(site[0])
    jar_cookie = http.cookiejar.Cookie(0, "sessionid", "s%3Agone.bad", None, False, "127.0.0.1", False, False, "/",
                                       True, False, None, False, None, None, {})
    browser.jar.set_cookie(jar_cookie)
    reply = browser.open("/plain")  # CSRF_USE_SESSIONS: the CSRF middleware reads the session
    (set_cookie,) = reply.set_cookies
    assert set_cookie.startswith('sessionid=""; ') and "Max-Age=0" in set_cookie
    assert [cookie.name for cookie in browser.jar] == []


# System checks and the middleware's refusal ##############################################################

CHECK_CASES: List[Tuple[str, List[str]]] = [
    ("agree", []),
    ("with-contrib-sessions", []),
    ("contradiction", ["sessions_py.E010", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_NAME"]),
    ("engine", ["sessions_py.E001", "SESSION_ENGINE"]),
    ("serializer", ["sessions_py.E002", "SESSION_SERIALIZER"]),
    ("both", ["sessions_py.E003", "SESSIONS_PY_MANAGER", "SESSIONS_PY_STORE"]),
    ("invalid", ["sessions_py.E004", "same_site='None' needs secure=True"]),
    ("partitioned", ["sessions_py.E005", "partitioned"]),
    ("engine-only", ["sessions_py.W001", "SESSION_FILE_PATH"]),
    ("not-a-manager", ["sessions_py.E004", "SESSIONS_PY_MANAGER must be a sessions.SessionManager"]),
]


@pytest.mark.parametrize("case, expected", CHECK_CASES, ids=[case for case, _ in CHECK_CASES])
def test_system_check_names_what_cannot_apply(case, expected, tmp_path):
    run = manage("sessions.py", str(tmp_path), "check", DJANGO_SETTINGS_MODULE="project.settings_checks",
                 CHECK_CASE=case)
    output = run.stdout + run.stderr
    if not expected:
        assert run.returncode == 0 and "System check identified no issues (0 silenced)." in output, output
        return
    assert ("ERRORS:" in output) == (run.returncode != 0), output
    for text in expected:
        assert text in output, output
    if "sessions_py.E010" in expected:  # only the settings the project changed: never the secret
        assert output.count("sessions_py.E010") == 2 and "SECRET_KEY" not in output, output


def test_clearsessions_prunes_the_store_when_djangos_sessions_app_stays(tmp_path):
    store = sessions.SQLiteStore(str(tmp_path / "sessions.sqlite3"), clock=lambda: 0.0)
    store.set("old", '{"cookie":{"originalMaxAge":null,"expires":null}}', 1.0)
    assert store.ids() == ["old"]
    run = manage("sessions.py", str(tmp_path), "clearsessions", DJANGO_SETTINGS_MODULE="project.settings_checks",
                 CHECK_CASE="with-contrib-sessions")
    assert run.returncode == 0, run.stderr
    assert len(sessions.SQLiteStore(str(tmp_path / "sessions.sqlite3"), clock=lambda: 0.0)) == 0


def test_the_middleware_refuses_to_start_on_a_check_error_without_the_app(tmp_path):
    """Without the app in INSTALLED_APPS no check runs, so the middleware itself refuses what cannot apply."""
    run = manage("sessions.py", str(tmp_path), "shell", "-c",
                 "from django.core.handlers.wsgi import WSGIHandler; WSGIHandler()",
                 DJANGO_SETTINGS_MODULE="project.settings_checks", CHECK_CASE="contradiction-without-app")
    assert run.returncode != 0
    assert "sessions.ConfigurationError" in run.stderr and "SESSION_COOKIE_SECURE" in run.stderr, run.stderr[-3000:]


# The cookie through response.set_cookie, and session keys (in this process) ###############################
#
# Django's settings are configured once here, with its defaults and the engine; nothing else in this process
# uses Django (the other test files run it in processes of their own).


@pytest.fixture(scope="module")
def django_here() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(SECRET_KEY="in-process secret", SESSION_ENGINE="sessions",
                           SESSIONS_PY_STORE=sessions.MemoryStore())


def attributes(set_cookie: str) -> Dict[str, str]:
    """A Set-Cookie value's pair and attributes, names lower-cased, flags as "" (order ignored)."""
    pair, *parts = set_cookie.split("; ")
    found = {"": pair.replace('""', "")}  # Django writes the deleted cookie's empty value as ""
    for part in parts:
        name, _, value = part.partition("=")
        found[name.lower()] = value
    return found


COOKIE_NAMES = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=12)


@given(
    name=COOKIE_NAMES.filter(lambda n: n.lower() not in http.cookies.Morsel._reserved),  # type: ignore[attr-defined]
    path=st.sampled_from(["/", "/app", "/a/b-c"]),
    domain=st.sampled_from([None, "example.com", ".example.com"]),
    max_age=st.one_of(st.none(), st.integers(1, 10**8)),
    http_only=st.booleans(),
    secure=st.booleans(),
    same_site=st.sampled_from([None, "Lax", "Strict", "None"]),
    destroyed=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_the_cookie_reaches_response_set_cookie_unchanged(django_here, name, path, domain, max_age, http_only, secure,
                                                          same_site, destroyed):
    from django.http import HttpResponse

    secure = secure or same_site == "None"
    try:
        manager = sessions.SessionManager("secret", name=name, store=sessions.MemoryStore(), cookie=dict(
            path=path, domain=domain, max_age=max_age, http_only=http_only, secure=secure, same_site=same_site))
    except sessions.ConfigurationError:  # e.g. a "__Host-" name without secure=True
        reject()
    session = manager.open(None, secure=True, path=path)
    session["k"] = 1
    if destroyed:
        session.save()
        session.destroy()
    (set_cookie,) = manager.commit(session)
    response = HttpResponse()
    sessions._django_set_cookie(response, set_cookie)
    assert attributes(response.cookies[name].OutputString()) == attributes(set_cookie)


@given(key=st.one_of(st.text(max_size=80), st.text(alphabet=string.ascii_letters + "%:.-_", max_size=80)))
@settings(max_examples=300, deadline=None)
def test_a_session_key_that_sessions_py_did_not_issue_names_no_session(django_here, key):
    session = sessions.SessionStore(key)
    assert session.session_key is None and len(session) == 0


def test_an_issued_session_key_names_its_session_and_nothing_unsigned_does(django_here):
    session = sessions.SessionStore()
    session["x"] = 1
    session.save()
    assert sessions.SessionStore(session.session_key)["x"] == 1
    assert sessions.SessionStore(session.id).session_key is None  # the bare id, as a forged cookie would hold it
    assert sessions.SessionStore("s%3A" + session.id).session_key is None


def test_secret_key_fallbacks_verify_and_secret_key_signs(django_here):
    from django.test import override_settings

    with override_settings(SECRET_KEY="old secret"):
        session = sessions.SessionStore()
        session["x"] = 1
        session.save()
        old_key = session.session_key
    with override_settings(SECRET_KEY="new secret", SECRET_KEY_FALLBACKS=["old secret"]):
        session = sessions.SessionStore(old_key)
        assert session["x"] == 1 and session.session_key != old_key  # the key now signed with SECRET_KEY
        assert sessions.unsign(urllib.parse.unquote(session.session_key)[2:], "new secret") == session.id
    with override_settings(SECRET_KEY="new secret"):
        assert sessions.SessionStore(old_key).session_key is None


# Importing sessions.py ####################################################################################


def test_importing_sessions_imports_no_django():
    code = ("import sys, sessions; from sessions import *; "
            "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')]")
    subprocess.run([sys.executable, "-c", code], cwd=HERE, check=True, timeout=60)


def test_without_django_only_the_django_classes_fail_to_build():
    code = ("import sys; sys.modules['django'] = None\n"
            "import sessions; from sessions import *\n"
            "try:\n    sessions.DjangoSessionMiddleware\nexcept ImportError:\n    print('no django')\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, timeout=60)
    assert run.stdout == "no django\n", run.stderr


def test_the_django_classes_subclass_djangos():
    code = ("import sessions, django.contrib.sessions.middleware as m, django.apps as a\n"
            "assert issubclass(sessions.DjangoSessionMiddleware, m.SessionMiddleware)\n"
            "assert issubclass(sessions.DjangoSessionsConfig, a.AppConfig)\n"
            "assert sessions.DjangoSessionMiddleware is sessions.DjangoSessionMiddleware\n")
    subprocess.run([sys.executable, "-c", code], cwd=HERE, check=True, timeout=60)
