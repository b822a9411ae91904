#!/usr/bin/env python3
"""demo_server.py: a small site that shows what sessions.py does, usable in a real browser.

    python3 demo_server.py            # http://127.0.0.1:8000/, Ctrl+C to stop
    python3 demo_server.py --help     # --port, --store, --max-age, --rolling, --secret, --with-express

Standard library only: http.server + sessions.SessionHandlerMixin + a MemoryStore (``--store`` picks
SQLiteStore, RedisStore or PostgresStore instead; the redis or psycopg package is imported only then). It listens on 127.0.0.1 only.

Pages: ``/`` (visit counter and the session's state), ``/login`` (regenerates the session id on success),
``/logout`` (POST; destroys the session and clears the cookie), ``/account`` (where the user is logged in:
the store's owner index, each session ended on its own or "log out everywhere else"), ``/pitfall`` (a write after the response
started raises instead of being lost), ``/many-tabs`` (20 requests of one session at once, each writing its
own key: the session keeps all of them), ``/session.json`` (the session data, for scripts).

With ``--store redis://...`` and ``--with-express``, the Express twin (fixtures/express: express-session and
connect-redis) runs on the next port, sharing the store, and the home page links to the same session there.

For tests and embedding, the site is built around an injected manager::

    server = build_server(0, sessions.SessionManager(secret, clock=fake_clock, ...))
    threading.Thread(target=server.serve_forever).start()
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import json
import logging
import os
import re
import secrets
import signal
import socket
import shutil
import socketserver
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

import sessions

log = logging.getLogger("demo_server")

#: Demo accounts, listed on the login page. A real application stores password hashes, never passwords.
USERS: Dict[str, str] = {"alice": "wonderland", "bob": "builder"}

#: A login form is a few hundred bytes; anything bigger is refused before it is read.
MAX_FORM_BYTES = 4096
MAX_FORM_FIELDS = 16
#: A body the server answers without reading (a 405, a 413) is read and dropped up to this size, so the
#: connection stays usable; beyond it the connection is closed.
DISCARD_LIMIT = 65536

CSRF_KEY = "csrf_token"
CSRF_FIELD = "csrf_token"

#: Flash messages that survive logout travel in the URL (the session is gone by then), so only these fixed
#: keys are accepted: the page never echoes text from the query string.
URL_FLASHES = {
    "logged-out": "You are logged out: the session was destroyed on the server and its cookie cleared.",
}

#: What the home page says about a new session, by ``DemoHandler.new_reason``. A cookie that names no live
#: session (idle too long, or the server forgot it), one that this server did not sign (it restarted with
#: a new random secret) and one the browser dropped when it ran out all mean, to the visitor: your session
#: expired.
NEW_STATES = {
    "no-cookie": "new: a first visit (no session cookie came with this request), so this visit started a session",
    "cookie-ran-out": "new: your session expired. Your browser dropped its session cookie when the cookie ran "
                      "out, so this visit started a new one",
    "not-found": "new: your session expired. Your browser's cookie named a session the store no longer has, "
                 "so this visit started a new one",
    "bad-signature": "new: your session expired. Your browser's cookie was not signed with this server's "
                     "secret (did the server restart with a random one?), so this visit started a new one",
}
EXPIRED = ("cookie-ran-out", "not-found", "bad-signature")
#: A browser drops the session cookie when it runs out, and then a returning visitor sends no cookie at all,
#: like a first visit. To tell the two apart, the home page also sets this day-long marker cookie (logout
#: clears it). It carries nothing but "1".
SEEN_COOKIE = "demo_seen"

#: The many-tabs page: this many requests of one session at once, each loading the session, working for
#: TAB_WORK_SECONDS (as a handler that queries a database would), then writing its own key.
TABS = 20
#: The Account page names each session by the User-Agent it logged in with, at most this long.
DEVICE_LENGTH = 120
TAB_WORK_SECONDS = 0.05
TAB_KEY = "tab-{:02d}"

#: No script, styles only inline, forms only to this site, never framed.
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
#: The many-tabs page also runs this site's own script (/many-tabs.js), which calls this site.
CSP_WITH_SCRIPT = CSP + "; script-src 'self'; connect-src 'self'"

ESCAPE = html.escape


def short_hash(sid: str) -> str:
    """What the pages show instead of the session id: the id is a bearer secret and never displayed."""
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()[:8]


class HTTPProblem(Exception):
    """An error response: the handler raises it, the dispatcher renders it as a page."""

    def __init__(self, status: int, message: str, headers: Iterable[Tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


# HTML #####################################################################################################

# The code samples are short-lined and wrap (pre-wrap) rather than scroll, so they read whole from phone
# width up; at phone width the table's cells stack.
STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 1.5rem auto; padding: 0 1rem; color: #222; }
nav { display: flex; flex-wrap: wrap; gap: .2rem 1.2rem; padding-bottom: .4rem; border-bottom: 1px solid #ddd; }
nav a, nav span { white-space: nowrap; }
nav .who { margin-left: auto; }
h1 { font-size: 1.6rem; margin-top: 1rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { text-align: left; padding: .3rem .8rem .3rem 0; vertical-align: top; }
code, pre { font: 14px/1.4 ui-monospace, monospace; background: #f3f3f3; }
pre { padding: .6rem .8rem; white-space: pre-wrap; overflow-wrap: anywhere; }
.flash { background: #e7f6e7; border: 1px solid #9c9; padding: .5rem 1rem; }
.notice { background: #fff6dd; border: 1px solid #dc9; padding: .5rem 1rem; }
.error { background: #fbeaea; border: 1px solid #d99; padding: .5rem 1rem; }
form.inline { display: inline; }
button { font: inherit; padding: .3rem .9rem; }
.tabs { display: grid; grid-template-columns: repeat(10, 1fr); gap: .3rem; list-style: none; padding: 0;
        max-width: 30rem; }
.tabs li { text-align: center; padding: .2rem 0; border-radius: 3px; }
.tabs .kept { background: #e7f6e7; border: 1px solid #9c9; }
.tabs .lost { background: #fbeaea; border: 1px solid #d99; text-decoration: line-through; }
label { display: block; margin: .5rem 0; }
.muted { color: #666; }
.label { display: none; color: #666; }
@media (max-width: 30rem) {
  body { padding: 0 .7rem; margin-top: .8rem; }
  code, pre { font-size: 12.5px; }
  pre { padding: .5rem; }
  nav .who { margin-left: 0; }
  th, td { display: block; padding: 0; }
  th { padding-top: .6rem; }
  .tabs { grid-template-columns: repeat(5, 1fr); }
  #sessions tr:first-child { display: none; }
  #sessions tr.session { display: block; border-top: 1px solid #ddd; padding: .5rem 0; }
  .label { display: inline; }
}
"""


def layout(title: str, body: str, who: str) -> str:
    """A page: ``who`` is the nav's account status as HTML (see DemoHandler.who)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{ESCAPE(title)} · sessions.py demo</title><style>{STYLE}</style></head><body>"
        "<nav><a href=\"/\">Home</a><a href=\"/login\">Log in</a><a href=\"/account\">Account</a>"
        "<a href=\"/pitfall\">The pitfall</a>"
        "<a href=\"/many-tabs\">Many tabs</a>"
        f"<a href=\"/session.json\">/session.json</a><span class=\"who muted\" id=\"who\">{who}</span></nav>"
        f"{body}</body></html>\n"
    )


def when(moment: Optional[datetime]) -> str:
    """A time on the Account page: UTC, to the second."""
    return "unknown" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def flash_html(message: Optional[str]) -> str:
    return f'<p class="flash" id="flash" role="status">{ESCAPE(message)}</p>' if message else ""


def csrf_input(token: str) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{ESCAPE(token)}">'


def logout_form(token: str, label: str) -> str:
    return (f'<form class="inline" method="post" action="/logout">{csrf_input(token)}'
            f'<button type="submit">{ESCAPE(label)}</button></form>')


# What page_pitfall does, as the page shows it. Lines of at most 45 characters, comments on lines of their
# own, so that both samples read whole, unwrapped, at 1200 px and at phone width (390 px).
PITFALL_WRONG = '''\
self.send_response(200)
self.send_header("Content-Type", "text/html")
self.end_headers()
# The response has started:
# the session was saved just now.

def on_rendered():
    # runs after rendering, like the
    # callback of res.render() in Express
    self.session["last_page"] = "late write"

on_rendered()
# express-session: lost, silently.
# sessions.py: raises SessionClosedError.'''

PITFALL_RIGHT = '''\
views = self.session.get("pitfall_views", 0)
self.session["pitfall_views"] = views + 1
self.session["last_page"] = "/pitfall"
# Every change before the response starts.

self.send_response(200)
self.send_header("Content-Type", "text/html")
self.end_headers()
# Saved here, before any byte is sent.'''


# The many-tabs page's script: all requests at once, then what the session kept. ``?run`` runs it on load
# (a link that shows the result straight away, and a headless browser's screenshot).
MANY_TABS_JS = """\
'use strict'
const button = document.getElementById('fire')
const status = document.getElementById('status')
const cells = document.getElementById('tabs')

function post (path, fields) {
  return fetch(path, { method: 'POST', body: new URLSearchParams(fields), credentials: 'same-origin' })
    .then((response) => {
      if (!response.ok) throw new Error(path + ' answered ' + response.status)
      return response
    })
}

function show (result) {
  const kept = new Set(result.kept)
  cells.replaceChildren()
  for (let tab = 1; tab <= result.of; tab++) {
    const cell = document.createElement('li')
    cell.textContent = tab
    cell.className = kept.has(tab) ? 'kept' : 'lost'
    cell.title = 'request ' + tab + (kept.has(tab) ? ': its key was kept' : ': its key was lost')
    cells.append(cell)
  }
  const count = document.createElement('strong')
  count.id = 'kept'
  count.textContent = result.kept.length
  status.replaceChildren('The session kept ', count, ' of the ' + result.of + ' keys.')
}

async function fire () {
  const fields = { csrf_token: button.dataset.csrf }
  const tabs = Number(button.dataset.tabs)
  button.disabled = true
  cells.replaceChildren()
  status.textContent = 'Sending ' + tabs + ' requests at once…'
  try {
    await post('/many-tabs/start', fields)
    const requests = []
    for (let tab = 1; tab <= tabs; tab++) requests.push(post('/many-tabs/write', { ...fields, tab: String(tab) }))
    await Promise.all(requests)
    const response = await fetch('/many-tabs/result', { cache: 'no-store', credentials: 'same-origin' })
    show(await response.json())
  } catch (error) {
    status.textContent = 'A request failed (' + error.message + '): reload the page and try again.'
  } finally {
    button.disabled = false
  }
}

button.addEventListener('click', fire)
if (new URLSearchParams(window.location.search).has('run')) fire()
"""


# The handler ##############################################################################################


class DemoHandler(sessions.SessionHandlerMixin, BaseHTTPRequestHandler):
    """The site. Use ``make_handler(manager)`` for a subclass bound to a manager."""

    session_manager: sessions.SessionManager
    store_label = "MemoryStore"  # how the home page names the store (make_handler sets it)
    server_version = "sessions-demo/1"
    # Keep-alive, so a browser reuses its connection. http.server then writes the headers and the body in
    # separate send() calls; with Nagle's algorithm on, the body waits for the client's delayed ACK of the
    # headers, ~40 ms per response (SPEC section 10). disable_nagle_algorithm sets TCP_NODELAY.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # An idle keep-alive connection (or a client that stops sending mid-request) is closed after this.
    timeout = 30
    log_requests = True

    # Routes: path -> method -> handler method name. HEAD runs the GET handler and sends no body.
    routes: Dict[str, Dict[str, str]] = {
        "/": {"GET": "page_home"},
        "/login": {"GET": "page_login", "POST": "post_login"},
        "/logout": {"POST": "post_logout"},
        "/account": {"GET": "page_account"},
        "/account/end": {"POST": "post_account_end"},
        "/account/end-others": {"POST": "post_account_end_others"},
        "/pitfall": {"GET": "page_pitfall"},
        "/many-tabs": {"GET": "page_many_tabs"},
        "/many-tabs.js": {"GET": "page_many_tabs_js"},
        "/many-tabs/start": {"POST": "post_many_tabs_start"},
        "/many-tabs/write": {"POST": "post_many_tabs_write"},
        "/many-tabs/result": {"GET": "page_many_tabs_result"},
        "/session.json": {"GET": "page_session_json"},
    }

    error_message_format = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>%(code)d %(message)s</title>"
        "</head><body><h1>%(code)d %(message)s</h1><p>%(explain)s</p><p><a href=\"/\">Home</a></p></body></html>\n"
    )

    # Every method goes through one dispatcher: 404 for unknown paths, 405 (with Allow) for known paths.
    def do_GET(self) -> None:
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_GET

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's signature)
        if self.log_requests:
            super().log_message(format, *args)

    # Plumbing ---------------------------------------------------------------------------------------------

    def dispatch(self) -> None:
        self._body_read = False
        self._linger = False
        self._store_failed = False
        try:
            try:
                path = urlsplit(self.path).path
            except ValueError:  # e.g. "http://[::1/": an unclosed IPv6 literal
                raise HTTPProblem(400, "The request target is not a valid URL.") from None
            methods = self.routes.get(path)
            if methods is None:
                raise HTTPProblem(404, f"There is no page at {path}.")
            allowed = self.allowed(methods)
            if self.command == "OPTIONS":
                self.send_page(204, b"", None, [("Allow", allowed)])
                return
            name = methods.get("GET" if self.command == "HEAD" else self.command)
            if name is None:
                raise HTTPProblem(405, f"{self.command} is not allowed on {path}; use {allowed}.", [("Allow", allowed)])
            getattr(self, name)()
        except HTTPProblem as problem:
            self.fail(problem.status, problem.message, problem.headers)
        except (ConnectionError, socket.timeout):
            self.close_connection = True  # the client went away or stalled
        except Exception as exc:
            self.log_failure(exc)
            # The mixin's way out: the 500 (send_internal_error below), unless the response is already out
            # (a commit that failed in end_headers was answered there); then the connection closes.
            self.answer_internal_error(exc)
        finally:
            if self._linger:
                self.linger()

    def fail(self, status: int, message: str, headers: Iterable[Tuple[str, str]] = ()) -> None:
        """An error page for a problem of the request (4xx)."""
        if self._session_headers_sent:  # too late for an error page: cut the response short so the client notices
            self.close_connection = True
            return
        self._headers_buffer = []  # the response being built, if any, is replaced
        try:
            self.send_error_page(status, message, headers)
        except sessions.StoreError as exc:  # its commit failed: the mixin has answered with the 500 page
            self.log_failure(exc)
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    def log_failure(self, exc: Exception) -> None:
        where = (self.command, self.path.split("?", 1)[0])
        if isinstance(exc, sessions.StoreError):
            # An outage, not a bug: one line for the operator, no traceback (its text never holds an id).
            log.error("session store failure on %s %s: %s", *where, exc)
        else:
            log.exception("error while handling %s %s", *where)

    def send_internal_error(self, error: BaseException) -> None:
        """The mixin's 500, as this site's page: the client gets a plain page, never a traceback. A store
        failure is an outage, not a bug; the site recovers by itself (the next request asks the store again)."""
        if isinstance(error, sessions.StoreError):
            self._store_failed = True  # the nav then does not ask the store again
            message = (f"The session store ({self.store_label}) is not answering, so your session cannot be read "
                       "or saved right now. Reload in a moment: the site recovers by itself.")
        else:
            message = "Something went wrong on the server; the details are in its log."
        self.send_error_page(500, message)

    @staticmethod
    def allowed(methods: Dict[str, str]) -> str:
        names = list(methods)
        if "GET" in names:
            names.insert(names.index("GET") + 1, "HEAD")
        return ", ".join(names + ["OPTIONS"])

    def send_page(self, status: int, body: bytes, content_type: Optional[str] = "text/html; charset=utf-8",
                  headers: Iterable[Tuple[str, str]] = (), csp: str = CSP) -> None:
        if not self._body_read and self.has_request_body():
            self.skip_request_body()
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if status != 204:  # a 204 must not carry Content-Length
            self.send_header("Content-Length", str(len(body)))
        self.send_common_headers(csp)
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()  # the session is committed here, before any byte of the response
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def send_common_headers(self, csp: str = CSP) -> None:
        self.send_header("Content-Security-Policy", csp)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")  # every page shows one visitor's session

    def send_html(self, html_text: str, status: int = 200) -> None:
        self.send_page(status, html_text.encode("utf-8"))

    def send_error_page(self, status: int, message: str, headers: Iterable[Tuple[str, str]] = ()) -> None:
        reason = self.responses.get(status, ("Error",))[0]
        body = layout(f"{status} {reason}", f"<h1>{status} {ESCAPE(reason)}</h1>"
                      f'<p class="error" id="error">{ESCAPE(message)}</p><p><a href="/">Back to the home page</a></p>',
                      self.who())
        self.send_page(status, body.encode("utf-8"), headers=headers)

    def redirect(self, location: str, headers: Iterable[Tuple[str, str]] = ()) -> None:
        body = f'<p>See <a href="{ESCAPE(location)}">{ESCAPE(location)}</a>.</p>'.encode("utf-8")
        self.send_page(303, body, headers=[("Location", location), *headers])

    def skip_request_body(self) -> None:
        """Answering without reading the body: discard a small one so the connection stays usable. Otherwise
        close, and linger: closing a socket with unread input sends a TCP reset, which can destroy the
        response before the client reads it."""
        self._body_read = True
        length = (self.headers.get("Content-Length") or "").strip()
        if not self.headers.get("Transfer-Encoding") and re.fullmatch(r"[0-9]{1,9}", length) and int(length) <= DISCARD_LIMIT:
            if len(self.rfile.read(int(length))) == int(length):
                return
        self.close_connection = True
        self._linger = True

    def linger(self) -> None:
        """Close the sending side, then drain (briefly, boundedly) what the client still sends."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1)
            budget = DISCARD_LIMIT * 4
            while budget > 0:
                chunk = self.connection.recv(min(budget, 16384))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    def has_request_body(self) -> bool:
        return bool(self.headers.get("Transfer-Encoding")) or self.headers.get("Content-Length", "0").strip() not in ("", "0")

    def read_form(self) -> Dict[str, str]:
        """The urlencoded form of a POST, or HTTPProblem 400/411/413/415 with a message."""
        if self.headers.get("Transfer-Encoding"):
            raise HTTPProblem(411, "Send the form with a Content-Length header (chunked bodies are not accepted).")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise HTTPProblem(411, "A form needs a Content-Length header.")
        if len(lengths) > 1 or not re.fullmatch(r"[0-9]{1,9}", lengths[0].strip()):
            raise HTTPProblem(400, "Malformed form: the Content-Length header is not a single non-negative number.")
        length = int(lengths[0])
        if length > MAX_FORM_BYTES:
            raise HTTPProblem(413, f"The form is too large ({length} bytes; at most {MAX_FORM_BYTES} are accepted).")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True  # the client closed its side early
            raise HTTPProblem(400, "Malformed form: the body is shorter than its Content-Length.")
        self._body_read = True
        media_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media_type != "application/x-www-form-urlencoded":
            raise HTTPProblem(415, "Send the form as application/x-www-form-urlencoded.")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                              encoding="utf-8", errors="strict", max_num_fields=MAX_FORM_FIELDS)
        except UnicodeDecodeError:
            raise HTTPProblem(400, "Malformed form: it is not valid UTF-8.") from None
        except ValueError:
            raise HTTPProblem(400, "Malformed form: it is not valid application/x-www-form-urlencoded data "
                                   f"(at most {MAX_FORM_FIELDS} fields).") from None
        form: Dict[str, str] = {}
        for name, value in pairs:
            if name in form:
                raise HTTPProblem(400, f"Malformed form: the field {name!r} appears more than once.")
            form[name] = value
        return form

    @staticmethod
    def require(form: Dict[str, str], *names: str) -> List[str]:
        missing = [name for name in names if name not in form]
        if missing:
            raise HTTPProblem(400, "Malformed form: missing field(s) " + ", ".join(missing) + ".")
        return [form[name] for name in names]

    # CSRF: a random token kept in the session; every POST form carries it back.
    def csrf_token(self) -> str:
        token = self.session.get(CSRF_KEY)
        if not isinstance(token, str):
            token = self.session[CSRF_KEY] = secrets.token_urlsafe(32)
        return token

    def check_csrf(self, form: Dict[str, str]) -> None:
        expected = self.session.get(CSRF_KEY)
        given = form.get(CSRF_FIELD)
        # compare_digest on bytes: on str it raises TypeError for non-ASCII input.
        if not (isinstance(expected, str) and given
                and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))):
            if self.new_reason() in EXPIRED:
                raise HTTPProblem(403, "Your session expired, so the form's CSRF token no longer matches. "
                                       "Reload the page and submit the form again.")
            raise HTTPProblem(403, "The form's CSRF token is missing or wrong. "
                                   "Reload the page and submit the form again.")

    def user(self) -> Optional[str]:
        user = self.session.get("user")
        return user if isinstance(user, str) else None

    def seen_before(self) -> bool:
        return bool(sessions.parse_cookie_header(self.headers.get_all("Cookie"), SEEN_COOKIE))

    def new_reason(self) -> Optional[str]:
        """``session.new_reason``, with "cookie-ran-out" for a returning visitor who sent no session cookie."""
        reason = self.session.new_reason
        return "cookie-ran-out" if reason == "no-cookie" and self.seen_before() else reason

    def who(self) -> str:
        """The nav's account status, on every page (error pages too), as HTML."""
        if self._store_failed:  # asking the store again would only wait for it to fail again
            return "session unavailable"
        try:
            user = self.user()
        except sessions.SessionError:
            return "session unavailable"
        return f"logged in as <strong>{ESCAPE(user)}</strong>" if user else "not logged in"

    # Pages ------------------------------------------------------------------------------------------------

    def page_home(self) -> None:
        session = self.session
        reason = self.new_reason()
        left = None if reason else session.cookie.max_age  # before this visit restarts the idle timeout
        visits = session.get("visits", 0)
        visits = (visits if isinstance(visits, int) else 0) + 1
        session["visits"] = visits  # so this response always carries the cookie (it is modified)
        flash = session.pop("flash", None)  # one-time: shown once, then gone
        query = dict(parse_qsl(urlsplit(self.path).query))
        flash = flash if isinstance(flash, str) else URL_FLASHES.get(query.get("flash", ""))
        token = self.csrf_token()
        user = self.user()
        lifetime = session.cookie.original_max_age
        rolling = self.session_manager.rolling

        state = "loaded: your browser's cookie named a live session in the store" if reason is None else \
            NEW_STATES.get(reason, "new")
        notice = ('<p class="notice" id="expired" role="status">Your session expired, so this visit started a '
                  "new one: the visit count starts again at 1.</p>" if reason in EXPIRED else "")
        if lifetime is None:
            expiry_rows = "<tr><th>Expires</th><td>when the browser closes</td></tr>"
            wait = "Close the browser"
        else:
            server = (f'in <span id="expires-in">{lifetime:.0f}</span> s without a request: every request '
                      "restarts it")
            server += "" if left is None else f" ({max(left, 0):.0f} s were left before this one)"
            if rolling:
                browser = (f"in {lifetime:.0f} s too: with rolling on, every response re-sends the cookie, so "
                           "it restarts with the store's")
            else:
                browser = (f"in {lifetime:.0f} s: this page changed the session (the visit count), so its "
                           "response sent the cookie. With rolling off, a request that changes nothing "
                           '(the login form, <a href="/session.json">/session.json</a>) restarts only the '
                           "store's clock: the cookie can run out first, and the next visit starts afresh")
            expiry_rows = (f'<tr><th>Expires in the store</th><td id="expires-store">{server}</td></tr>'
                           f'<tr><th>Your cookie expires</th><td id="expires-cookie">{browser}</td></tr>')
            wait = f"Wait {lifetime:.0f} s"
        if user:
            account = f"<strong>{ESCAPE(user)}</strong> {logout_form(token, 'Log out')}"
        elif reason is None:  # a session that existed before this request: it can be ended
            account = f'nobody: <a href="/login">log in</a> or {logout_form(token, "End this session")}'
        else:
            account = 'nobody: <a href="/login">log in</a>'

        body = f"""{flash_html(flash)}{notice}
<h1>sessions.py demo</h1>
<p>Visits in this session: <strong id="visits">{visits}</strong>.
<a href="/">Reload</a> to count another one.</p>
<table>
<tr><th>State</th><td id="state">{ESCAPE(state)}</td></tr>
<tr><th>Session</th><td><code id="sid-hash">{short_hash(session.id)}</code>
 <span class="muted">(first 8 hex digits of the SHA-256 of its id; the id itself is a secret and never shown)</span></td></tr>
<tr><th>Store</th><td id="store">{ESCAPE(self.store_label)}</td></tr>
{expiry_rows}
<tr><th>Rolling</th><td id="rolling">{"on" if rolling else "off"}</td></tr>
{self.express_row(session.id)}
<tr><th>User</th><td id="user">{account}</td></tr>
</table>
<h2>Try it</h2>
<ul>
<li><a href="/login">Log in</a>: the session id changes (see the hash above) and the visit count stays.</li>
<li>Log out: the session is destroyed and the browser's cookie cleared; the next visit starts afresh.</li>
<li>{wait}, then reload: your session expired, and a new one starts.</li>
<li><a href="/account">Account</a> (once logged in): where you are logged in, each session ended on its own or
all but this one ("log out everywhere else").</li>
<li><a href="/pitfall">The pitfall</a>: a session write after the response started raises instead of vanishing.</li>
<li><a href="/many-tabs">Many tabs</a>: {TABS} requests of this session at once, each writing its own key, and
how many of them the session keeps.</li>
<li><a href="/session.json">/session.json</a>: the session data, for scripts.</li>
</ul>
"""
        marker = [] if self.seen_before() else [("Set-Cookie", f"{SEEN_COOKIE}=1; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax")]
        self.send_page(200, layout("Home", body, self.who()).encode("utf-8"), headers=marker)

    def express_row(self, sid: str) -> str:
        """The home page's link to this session on the Express twin, when it runs."""
        url = self.server.express_url
        if url is None:
            return ""
        return (f'<tr><th>Express</th><td><a id="express" href="{ESCAPE(url)}get">This session on Express</a> '
                '<span class="muted">(express-session and connect-redis, on the same Redis, the same cookie: '
                f"the JSON's <code>id</code> starts with <code>{short_hash(sid)}</code>, as above)</span></td></tr>")

    def page_login(self) -> None:
        user = self.user()
        token = self.csrf_token()
        failed = self.session.pop("login_failed", None)  # set by a failed POST, shown once
        error = "Wrong user name or password." if isinstance(failed, str) else None
        username = failed if isinstance(failed, str) else ""
        users = "".join(f"<li><code>{ESCAPE(name)}</code> / <code>{ESCAPE(password)}</code></li>"
                        for name, password in USERS.items())
        visits = self.session.get("visits", 0)
        current = (f"<p>You are logged in as <strong>{ESCAPE(user)}</strong>. {logout_form(token, 'Log out')}</p>"
                   if user else "")
        error_html = f'<p class="error" id="error" role="alert">{ESCAPE(error)}</p>' if error else ""
        flash = self.session.pop("flash", None)  # e.g. from the Account page, asking to log in first
        body = f"""{flash_html(flash if isinstance(flash, str) else None)}<h1>Log in</h1>
{current}{error_html}
<form method="post" action="/login">
{csrf_input(token)}
<label>User name <input name="username" value="{ESCAPE(username)}" autocomplete="username" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form>
<p>Demo users:</p><ul>{users}</ul>
<p class="muted">A successful login calls <code>session.regenerate(keep_data=True)</code>: the session gets a new
id (so an id planted before the login is worthless after it: session fixation), your {ESCAPE(str(visits))}
visit(s) are kept, and a new CSRF token is issued. A wrong password changes nothing.</p>
"""
        self.send_html(layout("Log in", body, self.who()))

    def post_login(self) -> None:
        form = self.read_form()
        self.check_csrf(form)
        username, password = self.require(form, "username", "password")
        expected = USERS.get(username)
        # Compare in constant time, and do the same work for unknown users.
        ok = hmac.compare_digest(password.encode("utf-8"), (expected or "\0" * 16).encode("utf-8"))
        session = self.session
        if not (ok and expected is not None):
            # Post/Redirect/Get: the form is shown again by a GET, so reloading it does not re-post the password.
            session["login_failed"] = username
            self.redirect("/login")
            return
        session.regenerate(keep_data=True)  # new id, same data: defeats session fixation
        session.owner = username  # the store's owner index lists it under this user (the Account page)
        session["device"] = self.device()
        session["user"] = username
        session[CSRF_KEY] = secrets.token_urlsafe(32)  # new privileges, new token
        session["flash"] = f"Welcome, {username}! You are logged in; the session id changed and your visits were kept."
        self.redirect("/")  # saved before the redirect is sent, so the next page sees it

    def device(self) -> str:
        """What the Account page calls this browser: its User-Agent header, shortened."""
        agent = self.headers.get("User-Agent") or "an unknown browser"
        return agent if len(agent) <= DEVICE_LENGTH else agent[: DEVICE_LENGTH - 1] + "\u2026"

    def page_account(self) -> None:
        """Who is logged in where: this user's sessions (the store's owner index), each of which can be ended,
        and "log out everywhere else"."""
        user = self.user()
        if user is None:
            self.session["flash"] = "Log in first: the Account page lists the sessions of a user."
            self.redirect("/login")
            return
        session, token = self.session, self.csrf_token()
        flash = session.pop("flash", None)
        try:
            listed = self.session_manager.sessions_of(user, expose=("device",))
        except sessions.ConfigurationError:  # a store without an owner index
            listed = None
        if listed is None:
            rows = "<p class=\"notice\">This store keeps no index of the sessions of a user.</p>"
        else:
            rows = "".join(self.account_row(info, info.handle == session.handle, token) for info in listed)
            rows = f'<table id="sessions"><tr><th>Device</th><th>Logged in</th><th>Last seen</th><th>Expires</th>' \
                   f"<th></th></tr>{rows}</table>"
        others = 0 if listed is None else sum(info.handle != session.handle for info in listed)
        end_others = (f'<form method="post" action="/account/end-others">{csrf_input(token)}'
                      f'<button type="submit" id="end-others">Log out everywhere else ({others})</button></form>'
                      if others else '<p class="muted" id="alone">This is your only session.</p>')
        body = f"""{flash_html(flash if isinstance(flash, str) else None)}
<h1>Where you are logged in</h1>
<p>The sessions of <strong>{ESCAPE(user)}</strong>, found through the store's owner index
(<code>manager.sessions_of(user)</code>), most recently seen first. Each is named by a short hash of its id,
never the id.</p>
{rows}
{end_others}
<p class="muted">Log in as {ESCAPE(user)} in another browser (or a private window) to see one more row.
"Log out everywhere else" is <code>manager.end_sessions_of(user, keep=session)</code>: the other browsers'
next request starts a new, logged-out session, and a request of theirs already in flight cannot bring the
ended session back.</p>
"""
        self.send_html(layout("Account", body, self.who()))

    def account_row(self, info: sessions.SessionInfo, current: bool, token: str) -> str:
        device = info.data.get("device")
        device = ESCAPE(device) if isinstance(device, str) else "a browser"
        action = ('<strong id="this-device">this device</strong>' if current else
                  f'<form class="inline" method="post" action="/account/end">{csrf_input(token)}'
                  f'<input type="hidden" name="handle" value="{ESCAPE(info.handle)}">'
                  f'<button type="submit">End</button></form>')
        return (f'<tr class="session" data-handle="{ESCAPE(info.handle)}"><td>{device} '
                f'<code class="muted">{ESCAPE(info.handle)}</code></td>'
                f'<td><span class="label">Logged in </span>{when(info.created)}</td>'
                f'<td><span class="label">Last seen </span>{when(info.last_seen)}</td>'
                f'<td><span class="label">Expires </span>{when(info.expires)}</td><td>{action}</td></tr>')

    def post_account_end(self) -> None:
        form = self.read_form()
        self.check_csrf(form)
        (handle,) = self.require(form, "handle")
        user = self.user()
        if user is None:
            raise HTTPProblem(403, "Log in first: only a user's own sessions can be ended.")
        if handle == self.session.handle:
            raise HTTPProblem(400, "That is this session: use Log out.")
        ended = self.session_manager.end_session(user, handle)  # only one of this user's sessions
        self.session["flash"] = "That session is ended." if ended else "That session had ended already."
        self.redirect("/account")

    def post_account_end_others(self) -> None:
        form = self.read_form()
        self.check_csrf(form)
        user = self.user()
        if user is None:
            raise HTTPProblem(403, "Log in first: only a user's own sessions can be ended.")
        ended = self.session_manager.end_sessions_of(user, keep=self.session)
        self.session["flash"] = f"Logged out everywhere else: {ended} other session(s) ended."
        self.redirect("/account")

    def post_logout(self) -> None:
        form = self.read_form()
        self.check_csrf(form)
        self.session.destroy()  # deletes the record now; the response expires the cookie
        # Logged out is not expired: the next visit is a first visit again.
        self.redirect("/?flash=logged-out", [("Set-Cookie", f"{SEEN_COOKIE}=; Max-Age=0; Path=/")])

    def page_pitfall(self) -> None:
        session = self.session
        # The correct way: change the session before the response starts.
        views = session.get("pitfall_views", 0)
        session["pitfall_views"] = views = (views if isinstance(views, int) else 0) + 1
        session["last_page"] = "/pitfall"
        last_page = session["last_page"]

        chunked = self.request_version == "HTTP/1.1"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_common_headers()
        if chunked:  # the page is written while it is rendered, after the response started
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()  # the response starts: the session is committed (saved) here

        def on_rendered() -> None:  # the pitfall: a callback that runs after rendering
            session["last_page"] = "late write"

        try:
            on_rendered()
        except sessions.SessionError as exc:
            raised = f"{type(exc).__name__}: {exc}"
        else:  # would mean the library lost the write silently
            raised = "nothing was raised (the write would be lost silently)"
            log.error("a write after the response started did not raise")

        body = f"""<h1>The pitfall: writing to the session after the response started</h1>
<p>express-session's own tutorials write to the session in callbacks that run after the page was rendered.
The response has started by then, so express-session never saves that change and says nothing.
sessions.py commits the session when the response starts (here, in <code>end_headers</code>) and raises on any
later change, so the bug shows up at once instead of as missing data.</p>
<section><h2>Wrong: write after the response started</h2>
<pre>{ESCAPE(PITFALL_WRONG)}</pre>
<p>On this request the library raised:</p>
<pre class="error" id="raised">{ESCAPE(raised)}</pre></section>
<section><h2>Right: write before the response starts</h2>
<pre>{ESCAPE(PITFALL_RIGHT)}</pre>
<p>Saved: you have seen this page <strong id="pitfall-views">{views}</strong> time(s), and
<code>last_page</code> is <code id="last-page">{ESCAPE(last_page)}</code>, not the late value.
<a href="/pitfall">Reload</a> to count again; <a href="/session.json">/session.json</a> shows what was stored.</p></section>
"""
        page = layout("The pitfall", body, self.who())  # reading a closed session is fine
        if self.command == "HEAD":
            return
        data = page.encode("utf-8")
        if chunked:
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def page_many_tabs(self) -> None:
        token = self.csrf_token()  # also makes sure the session exists before the requests race
        body = f"""<h1>Many tabs, one session</h1>
<p>A browser often has several requests of one session in flight at once: tabs, parallel <code>fetch</code>
calls. The button sends {TABS} at once; each loads the session, works for {TAB_WORK_SECONDS * 1000:.0f} ms (as a
handler that queries a database would), writes its own key (<code>{TAB_KEY.format(1)}</code> to
<code>{TAB_KEY.format(TABS)}</code>) and saves.</p>
<p><button id="fire" type="button" data-csrf="{ESCAPE(token)}" data-tabs="{TABS}">Send {TABS} requests at once</button></p>
<noscript><p class="notice">This page needs JavaScript to send the requests.</p></noscript>
<p id="status" role="status">Press the button: the result shows here.</p>
<ol class="tabs" id="tabs"></ol>
<p>sessions.py keeps every one: a request's commit merges only the keys it changed into the session as
stored at that moment. Most session libraries (express-session, and the sessions of Flask, Django and
Starlette) instead save the whole session as each request loaded it, so the last request to finish
overwrites the keys the others wrote meanwhile (last write wins) and only some of the {TABS} survive.</p>
<p class="muted">What the session holds now: <a href="/session.json">/session.json</a>.</p>
<script src="/many-tabs.js"></script>
"""
        self.send_page(200, layout("Many tabs", body, self.who()).encode("utf-8"), csp=CSP_WITH_SCRIPT)

    def page_many_tabs_js(self) -> None:
        self.send_page(200, MANY_TABS_JS.encode("utf-8"), "text/javascript; charset=utf-8")

    def post_many_tabs_start(self) -> None:
        """Forgets the keys of the previous round, so the result counts this one."""
        self.check_csrf(self.read_form())
        for tab in range(1, TABS + 1):
            self.session.pop(TAB_KEY.format(tab), None)
        self.send_page(204, b"", None)

    def post_many_tabs_write(self) -> None:
        form = self.read_form()
        self.check_csrf(form)  # this loads the session
        (tab,) = self.require(form, "tab")
        if not (re.fullmatch(r"[0-9]{1,2}", tab) and 1 <= int(tab) <= TABS):
            raise HTTPProblem(400, f"tab must be a number from 1 to {TABS}.")
        time.sleep(TAB_WORK_SECONDS)  # the work between loading the session and saving it
        self.session[TAB_KEY.format(int(tab))] = "written"
        self.send_page(204, b"", None)

    def page_many_tabs_result(self) -> None:
        kept = [tab for tab in range(1, TABS + 1) if TAB_KEY.format(tab) in self.session]
        data = json.dumps({"kept": kept, "of": TABS}) + "\n"
        self.send_page(200, data.encode("utf-8"), "application/json; charset=utf-8")

    def page_session_json(self) -> None:
        data = json.dumps(dict(self.session), ensure_ascii=False, indent=2) + "\n"
        self.send_page(200, data.encode("utf-8"), "application/json; charset=utf-8")


def make_handler(manager: sessions.SessionManager, *, store_label: Optional[str] = None,
                 log_requests: bool = True) -> type:
    """A DemoHandler subclass bound to ``manager`` (inject a fake clock or another store through it)."""
    label = store_label or type(manager.store).__name__
    return type("BoundDemoHandler", (DemoHandler,),
                {"session_manager": manager, "store_label": label, "log_requests": log_requests})


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True  # Ctrl+C must not wait for a browser's idle keep-alive connection
    # socketserver's default backlog is 5: more connections arriving at once than that (the many-tabs page's
    # requests, from several clients) could be refused or reset before a thread accepts them.
    request_queue_size = 64
    #: The Express twin's base URL when ``--with-express`` started it (the home page links to it).
    express_url: Optional[str] = None

    def server_bind(self) -> None:
        # HTTPServer.server_bind also calls socket.getfqdn(), a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]


def build_server(port: int, manager: sessions.SessionManager, *, store_label: Optional[str] = None,
                 log_requests: bool = True) -> DemoServer:
    """A ready server on 127.0.0.1 (only: it is a demo); call ``serve_forever()``, then ``shutdown()`` and
    ``server_close()``. ``port`` 0 picks a free one; the URL is ``server_url(server)``."""
    return DemoServer(("127.0.0.1", port), make_handler(manager, store_label=store_label, log_requests=log_requests))


def server_url(server: DemoServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


# Command line #############################################################################################


class StartupError(Exception):
    """The demo cannot start: main() prints the message as one line."""


#: ``redis://HOST[:PORT][/DB]``
REDIS_URL = re.compile(r"redis://([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?(?:/([0-9]{1,2}))?")


def store_option(text: str) -> str:
    """``--store``: checks the form only; ``make_store`` builds the store once the arguments are all valid."""
    if text == "memory" or (text.startswith("sqlite:") and len(text) > len("sqlite:")):
        return text
    match = REDIS_URL.fullmatch(text)
    if match and 0 < int(match.group(2) or 6379) < 65536:
        return text
    if postgres_address(text) is not None:
        return text
    raise argparse.ArgumentTypeError(
        f"expected memory, sqlite:PATH, redis://HOST:PORT/DB or postgresql://[USER@]HOST[:PORT]/DB, not {text!r}")


def postgres_address(spec: str) -> Optional[str]:
    """``postgresql://[user[:password]@]host[:port]/db`` as shown on the page (no user or password), or None
    when ``spec`` is not such a URL."""
    parts = urllib.parse.urlsplit(spec)
    try:
        port = parts.port or 5432
    except ValueError:
        return None
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path.strip("/"):
        return None
    return f"postgresql://{parts.hostname}:{port}{parts.path}"


def make_store(spec: str) -> Tuple[sessions.Store, str]:
    """The store a ``--store`` value names, and how the home page names it. The stores other than
    MemoryStore need the library's SQLiteStore / RedisStore, and RedisStore the redis package."""
    if spec == "memory":
        return sessions.MemoryStore(), "MemoryStore (in this server's memory: sessions end when it stops)"
    if spec.startswith("sqlite:"):
        path = spec[len("sqlite:"):]
        return library_store("SQLiteStore")(path), f"SQLiteStore ({path})"
    shown = postgres_address(spec)
    if shown is not None:
        try:
            import psycopg  # only when asked for, like redis
        except ImportError:
            raise StartupError("it needs the psycopg package (python3 -m pip install 'psycopg[binary]')") from None
        store = library_store("PostgresStore")(lambda: psycopg.connect(spec, connect_timeout=2), create_table=True)
        return store, f"PostgresStore ({shown}, connect-pg-simple's table)"
    host, port, db = redis_address(spec)
    try:
        import redis  # only when asked for: the demo itself needs nothing outside the standard library
    except ImportError:
        raise StartupError("it needs the redis package (python3 -m pip install redis)") from None
    # Short timeouts: while Redis is down, a page says so in 2 s instead of hanging.
    client = redis.Redis(host=host, port=port, db=db, socket_timeout=2, socket_connect_timeout=2)
    return library_store("RedisStore")(client), f"RedisStore (redis://{host}:{port}/{db})"


def redis_address(spec: str) -> Tuple[str, int, int]:
    """Host, port and database of a ``redis://`` ``--store`` value (already checked by store_option)."""
    host, port, db = REDIS_URL.fullmatch(spec).groups()
    return host, int(port or 6379), int(db or 0)


#: The Node app that shares sessions with this demo (the one test_interop.py runs).
EXPRESS_APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "express")
EXPRESS_START_SECONDS = 15


def start_express(port: int, store: str, secret: str, manager: sessions.SessionManager) -> subprocess.Popen:
    """fixtures/express/app.js on 127.0.0.1:``port`` with this demo's Redis, secret, cookie name, max-age
    and rolling, so a browser's session cookie opens the same session there. Its errors go to this
    terminal. Returns once it accepts connections; StartupError otherwise (the process stopped)."""
    node = shutil.which("node")
    if node is None:
        raise StartupError("node is not installed")
    if not os.path.isdir(os.path.join(EXPRESS_APP, "node_modules", "express-session")):
        raise StartupError("its packages are not installed: run npm ci --prefix fixtures/express")
    host, redis_port, db = redis_address(store)
    max_age = manager.cookie_options.max_age
    env = dict(os.environ, PORT=str(port), REDIS_URL=f"redis://{host}:{redis_port}/{db}", SECRET=secret,
               COOKIE_NAME=manager.name, ROLLING="1" if manager.rolling else "0")
    if max_age is not None:
        env["MAX_AGE_MS"] = str(round(max_age * 1000))
    process = subprocess.Popen([node, "app.js"], cwd=EXPRESS_APP, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_until_listening(process, port)
    except BaseException:  # StartupError, or Ctrl+C while it starts: never leave it running
        stop_express(process)
        raise
    return process


def wait_until_listening(process: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + EXPRESS_START_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise StartupError(f"it did not listen on 127.0.0.1:{port} (its error, if any, is above)")


def stop_express(process: subprocess.Popen) -> None:
    """Stop the twin by its PID: SIGTERM (it closes its Redis client), then SIGKILL after 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def library_store(name: str) -> type:
    store = getattr(sessions, name, None)
    if store is None:
        raise StartupError(f"this sessions.py has no {name} (--store memory works everywhere)")
    return store


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the whole usage first
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return int(value) if value.is_integer() else value


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = OneLineParser(description="A small site on 127.0.0.1 that shows what sessions.py does.")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--store", type=store_option, default="memory",
                        help="where sessions live: memory (default), sqlite:PATH, redis://HOST:PORT/DB or "
                             "postgresql://[USER@]HOST[:PORT]/DB")
    parser.add_argument("--max-age", type=positive_seconds, default=60,
                        help="session idle timeout in seconds (default 60)")
    parser.add_argument("--rolling", action="store_true", help="re-send the cookie on every response")
    parser.add_argument("--secret", default=None,
                        help="cookie signing secret (default: $SESSION_SECRET, else a random one; prefer the "
                             "environment variable, command lines are visible to other users)")
    parser.add_argument("--with-express", action="store_true",
                        help="with --store redis://...: also start the Express twin (fixtures/express, needs node) "
                             "on the next port, sharing the sessions")
    args = parser.parse_args(argv)
    if args.with_express and not args.store.startswith("redis://"):
        parser.error("--with-express needs --store redis://HOST:PORT/DB (Express shares the sessions through Redis)")
    return args


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        store, label = make_store(args.store)
    except (StartupError, sessions.SessionError) as exc:
        print(f"Cannot use --store {args.store}: {exc}", file=sys.stderr)
        return 1
    secret = args.secret or os.environ.get("SESSION_SECRET")
    if not secret:
        secret = secrets.token_urlsafe(32)
        print("No --secret or SESSION_SECRET given: using a random secret, so sessions end when the server stops.")
    manager = sessions.SessionManager(secret, store=store, cookie={"max_age": args.max_age}, rolling=args.rolling)
    try:
        server = build_server(args.port, manager, store_label=label)
    except OSError as exc:
        print(f"Cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}. Try another --port.", file=sys.stderr)
        return 1
    express = None
    if args.with_express:
        express_port = server.server_address[1] + 1
        try:
            express = start_express(express_port, args.store, secret, manager)
        except StartupError as exc:
            server.server_close()
            print(f"Cannot start the Express twin: {exc}", file=sys.stderr)
            return 1
        server.express_url = f"http://127.0.0.1:{express_port}/"
    print(f"Serving the sessions.py demo on {server_url(server)}  "
          f"(store {args.store}, max-age {args.max_age} s, rolling {'on' if args.rolling else 'off'})")
    if express is not None:
        print(f"The Express twin (express-session + connect-redis, the same sessions) on {server.express_url}get")
    print("Ctrl+C to stop", flush=True)
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops as cleanly as Ctrl+C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopped.", flush=True)
    finally:
        server.server_close()
        if express is not None:
            stop_express(express)
    return 0


if __name__ == "__main__":
    sys.exit(main())
