#!/usr/bin/env python3
"""demo_server.py: a small site that shows what sessions.py does, usable in a real browser.

    python demo_server.py            # http://127.0.0.1:8000, Ctrl+C to stop
    python demo_server.py --help     # --host, --port, --max-age, --rolling, --secret

Standard library only: http.server + sessions.SessionHandlerMixin + the default MemoryStore.

Pages: ``/`` (visit counter and the session's state), ``/login`` (regenerates the session id on success),
``/logout`` (POST; destroys the session and clears the cookie), ``/pitfall`` (a write after the response
started raises instead of being lost), ``/session.json`` (the session data, for scripts).

For tests and embedding, the site is built around an injected manager::

    server = build_server("127.0.0.1", 0, sessions.SessionManager(secret, clock=fake_clock, ...))
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
import socketserver
import sys
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

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
nav a { margin-right: 1rem; }
h1 { font-size: 1.6rem; margin-top: 1rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { text-align: left; padding: .3rem .8rem .3rem 0; vertical-align: top; }
code, pre { font: 14px/1.4 ui-monospace, monospace; background: #f3f3f3; }
pre { padding: .8rem; overflow-x: auto; }
.flash { background: #e7f6e7; border: 1px solid #9c9; padding: .5rem 1rem; }
.error { background: #fbeaea; border: 1px solid #d99; padding: .5rem 1rem; }
pre.error { white-space: pre-wrap; overflow-wrap: anywhere; }
.columns { display: flex; gap: 1.5rem; flex-wrap: wrap; }
.columns > section { flex: 1 1 22rem; min-width: 0; }
form.inline { display: inline; }
label { display: block; margin: .5rem 0; }
.muted { color: #666; }
"""


def layout(title: str, body: str, user: Optional[str] = None) -> str:
    who = f"logged in as <strong>{ESCAPE(user)}</strong>" if user else "not logged in"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{ESCAPE(title)} · sessions.py demo</title><style>{STYLE}</style></head><body>"
        "<nav><a href=\"/\">Home</a><a href=\"/login\">Log in</a><a href=\"/pitfall\">The pitfall</a>"
        f"<a href=\"/session.json\">/session.json</a><span class=\"muted\">{who}</span></nav>"
        f"{body}</body></html>\n"
    )


def flash_html(message: Optional[str]) -> str:
    return f'<p class="flash" id="flash" role="status">{ESCAPE(message)}</p>' if message else ""


def csrf_input(token: str) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{ESCAPE(token)}">'


def logout_form(token: str, label: str) -> str:
    return (f'<form class="inline" method="post" action="/logout">{csrf_input(token)}'
            f'<button type="submit">{ESCAPE(label)}</button></form>')


PITFALL_WRONG = '''\
self.send_response(200)
self.send_header("Content-Type", "text/html; charset=utf-8")
self.end_headers()            # the response starts: the session is committed here

def on_rendered():            # a callback that runs after rendering,
    self.session["last_page"] = "/pitfall (late write)"   # like res.render(view, callback) in Express

on_rendered()                 # express-session: silently lost. sessions.py: raises'''

PITFALL_RIGHT = '''\
self.session["pitfall_views"] = self.session.get("pitfall_views", 0) + 1
self.session["last_page"] = "/pitfall"    # every change before the response starts

self.send_response(200)
self.send_header("Content-Type", "text/html; charset=utf-8")
self.end_headers()            # saved here, before any byte is sent'''


# The handler ##############################################################################################


class DemoHandler(sessions.SessionHandlerMixin, BaseHTTPRequestHandler):
    """The site. Use ``make_handler(manager)`` for a subclass bound to a manager."""

    session_manager: sessions.SessionManager
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
        "/pitfall": {"GET": "page_pitfall"},
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

    def send_response(self, code: int, message: Optional[str] = None) -> None:
        self._response_started = True
        super().send_response(code, message)

    def dispatch(self) -> None:
        self._response_started = False
        self._body_read = False
        self._linger = False
        try:
            path = urlsplit(self.path).path
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
        except Exception:
            # Logged for the operator; the client gets a plain 500 page, never a traceback.
            log.exception("error while handling %s %s", self.command, self.path.split("?", 1)[0])
            self.fail(500, "Something went wrong on the server; the details are in its log.")
        finally:
            if self._linger:
                self.linger()

    def fail(self, status: int, message: str, headers: Iterable[Tuple[str, str]] = ()) -> None:
        if self._response_started:  # too late for an error page: cut the response short so the client notices
            self.close_connection = True
            return
        try:
            self.send_error_page(status, message, headers)
        except sessions.SessionError:
            # The session could not be committed: the mixin has replaced the response with a bare 500.
            self.close_connection = True
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    @staticmethod
    def allowed(methods: Dict[str, str]) -> str:
        names = list(methods)
        if "GET" in names:
            names.insert(names.index("GET") + 1, "HEAD")
        return ", ".join(names + ["OPTIONS"])

    def send_page(self, status: int, body: bytes, content_type: Optional[str] = "text/html; charset=utf-8",
                  headers: Iterable[Tuple[str, str]] = ()) -> None:
        if not self._body_read and self.has_request_body():
            self.skip_request_body()
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if status != 204:  # a 204 must not carry Content-Length
            self.send_header("Content-Length", str(len(body)))
        self.send_common_headers()
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()  # the session is committed here, before any byte of the response
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def send_common_headers(self) -> None:
        # No script at all, styles only inline, forms only to this site, never framed.
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                         "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")  # every page shows one visitor's session

    def send_html(self, html_text: str, status: int = 200) -> None:
        self.send_page(status, html_text.encode("utf-8"))

    def send_error_page(self, status: int, message: str, headers: Iterable[Tuple[str, str]] = ()) -> None:
        reason = self.responses.get(status, ("Error",))[0]
        body = layout(f"{status} {reason}", f"<h1>{status} {ESCAPE(reason)}</h1>"
                      f'<p class="error" id="error">{ESCAPE(message)}</p><p><a href="/">Back to the home page</a></p>')
        self.send_page(status, body.encode("utf-8"), headers=headers)

    def redirect(self, location: str) -> None:
        body = f'<p>See <a href="{ESCAPE(location)}">{ESCAPE(location)}</a>.</p>'.encode("utf-8")
        self.send_page(303, body, headers=[("Location", location)])

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
            raise HTTPProblem(403, "The form's CSRF token is missing or wrong (or your session expired). "
                                   "Reload the page and submit the form again.")

    def user(self) -> Optional[str]:
        user = self.session.get("user")
        return user if isinstance(user, str) else None

    # Pages ------------------------------------------------------------------------------------------------

    def page_home(self) -> None:
        session = self.session
        is_new = session.is_new
        left = None if is_new else session.cookie.max_age  # before this visit restarts the idle timeout
        visits = session.get("visits", 0)
        visits = (visits if isinstance(visits, int) else 0) + 1
        session["visits"] = visits
        flash = session.pop("flash", None)  # one-time: shown once, then gone
        query = dict(parse_qsl(urlsplit(self.path).query))
        flash = flash if isinstance(flash, str) else URL_FLASHES.get(query.get("flash", ""))
        token = self.csrf_token()
        user = self.user()
        lifetime = session.cookie.original_max_age
        manager = self.session_manager

        if is_new:
            state = "new: no valid session cookie came with this request, so this visit started a session"
        else:
            state = "loaded: your browser's cookie named a live session in the store"
        if lifetime is None:
            expiry = "when the browser closes"
        else:
            expiry = (f'in <span id="expires-in">{lifetime:.0f}</span> s without a visit '
                      "(idle timeout; every request restarts it")
            expiry += ")" if left is None else f"; {max(left, 0):.0f} s were left before this one)"
        wait = "Close the browser" if lifetime is None else f"Wait {lifetime:.0f} s"
        if manager.rolling:
            rolling = "on: the cookie is re-sent on every response, so the browser's expiry slides too"
        else:
            rolling = ("off: the cookie is re-sent only when the session changes; the server-side expiry "
                       "slides on every request")
        if user:
            account = f"<strong>{ESCAPE(user)}</strong> {logout_form(token, 'Log out')}"
        else:
            account = f'nobody: <a href="/login">log in</a> or {logout_form(token, "End this session")}'

        body = f"""{flash_html(flash)}
<h1>sessions.py demo</h1>
<p>Visits in this session: <strong id="visits">{visits}</strong>.
<a href="/">Reload</a> to count another one.</p>
<table>
<tr><th>State</th><td id="state">{ESCAPE(state)}</td></tr>
<tr><th>Session</th><td><code id="sid-hash">{short_hash(session.id)}</code>
 <span class="muted">(first 8 hex digits of the SHA-256 of its id; the id itself is a secret and never shown)</span></td></tr>
<tr><th>Expires</th><td>{expiry}</td></tr>
<tr><th>User</th><td id="user">{account}</td></tr>
<tr><th>Rolling</th><td>{ESCAPE(rolling)}</td></tr>
</table>
<h2>Try it</h2>
<ul>
<li><a href="/login">Log in</a>: the session id changes (see the hash above) and the visit count stays.</li>
<li>Log out: the session is destroyed and the browser's cookie cleared; the next visit starts afresh.</li>
<li>{wait}, then reload: a new session.</li>
<li><a href="/pitfall">The pitfall</a>: a session write after the response started raises instead of vanishing.</li>
<li><a href="/session.json">/session.json</a>: the session data, for scripts.</li>
</ul>
"""
        self.send_html(layout("Home", body, user))

    def login_page(self, error: Optional[str] = None, username: str = "") -> str:
        user = self.user()
        token = self.csrf_token()
        users = "".join(f"<li><code>{ESCAPE(name)}</code> / <code>{ESCAPE(password)}</code></li>"
                        for name, password in USERS.items())
        visits = self.session.get("visits", 0)
        current = (f"<p>You are logged in as <strong>{ESCAPE(user)}</strong>. {logout_form(token, 'Log out')}</p>"
                   if user else "")
        error_html = f'<p class="error" id="error" role="alert">{ESCAPE(error)}</p>' if error else ""
        body = f"""<h1>Log in</h1>
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
        return layout("Log in", body, user)

    def page_login(self) -> None:
        self.send_html(self.login_page())

    def post_login(self) -> None:
        form = self.read_form()
        self.check_csrf(form)
        username, password = self.require(form, "username", "password")
        expected = USERS.get(username)
        # Compare in constant time, and do the same work for unknown users.
        ok = hmac.compare_digest(password.encode("utf-8"), (expected or "\0" * 16).encode("utf-8"))
        if not (ok and expected is not None):
            self.send_html(self.login_page("Wrong user name or password.", username))
            return
        session = self.session
        session.regenerate(keep_data=True)  # new id, same data: defeats session fixation
        session["user"] = username
        session[CSRF_KEY] = secrets.token_urlsafe(32)  # new privileges, new token
        session["flash"] = f"Welcome, {username}! You are logged in; the session id changed and your visits were kept."
        self.redirect("/")  # saved before the redirect is sent, so the next page sees it

    def post_logout(self) -> None:
        form = self.read_form()
        self.check_csrf(form)
        self.session.destroy()  # deletes the record now; the response expires the cookie
        self.redirect("/?flash=logged-out")

    def page_pitfall(self) -> None:
        session = self.session
        # The correct way: change the session before the response starts.
        views = session.get("pitfall_views", 0)
        session["pitfall_views"] = views = (views if isinstance(views, int) else 0) + 1
        session["last_page"] = "/pitfall"
        before = dict(session)

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
            session["last_page"] = "/pitfall (late write)"

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
<div class="columns">
<section><h2>Wrong: write after the response started</h2>
<pre>{ESCAPE(PITFALL_WRONG)}</pre>
<p>On this request the library raised:</p>
<pre class="error" id="raised">{ESCAPE(raised)}</pre></section>
<section><h2>Right: write before the response starts</h2>
<pre>{ESCAPE(PITFALL_RIGHT)}</pre>
<p>Saved: you have seen this page <strong id="pitfall-views">{views}</strong> time(s), and
<code>last_page</code> is <code id="last-page">{ESCAPE(str(before.get("last_page")))}</code>, not the late value.
<a href="/pitfall">Reload</a> to count again; <a href="/session.json">/session.json</a> shows what was stored.</p></section>
</div>
"""
        page = layout("The pitfall", body, before.get("user") if isinstance(before.get("user"), str) else None)
        if self.command == "HEAD":
            return
        data = page.encode("utf-8")
        if chunked:
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def page_session_json(self) -> None:
        data = json.dumps(dict(self.session), ensure_ascii=False, indent=2) + "\n"
        self.send_page(200, data.encode("utf-8"), "application/json; charset=utf-8")


def make_handler(manager: sessions.SessionManager, *, log_requests: bool = True) -> type:
    """A DemoHandler subclass bound to ``manager`` (inject a fake clock or another store through it)."""
    return type("BoundDemoHandler", (DemoHandler,), {"session_manager": manager, "log_requests": log_requests})


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True  # Ctrl+C must not wait for a browser's idle keep-alive connection

    def __init__(self, address: Tuple[str, int], handler: type) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also calls socket.getfqdn(), a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]


def build_server(host: str, port: int, manager: sessions.SessionManager, *, log_requests: bool = True) -> DemoServer:
    """A ready (bound, listening) server; call ``serve_forever()``, then ``shutdown()`` and ``server_close()``."""
    return DemoServer((host, port), make_handler(manager, log_requests=log_requests))


def server_url(server: DemoServer) -> str:
    host, port = server.server_address[0], server.server_address[1]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


# Command line #############################################################################################


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return int(value) if value.is_integer() else value


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A small site that shows what sessions.py does.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-age", type=positive_seconds, default=60,
                        help="session idle timeout in seconds (default 60)")
    parser.add_argument("--rolling", action="store_true", help="re-send the cookie on every response")
    parser.add_argument("--secret", default=None,
                        help="cookie signing secret (default: $SESSION_SECRET, else a random one; prefer the "
                             "environment variable, command lines are visible to other users)")
    return parser.parse_args(argv)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    secret = args.secret or os.environ.get("SESSION_SECRET")
    if not secret:
        secret = secrets.token_urlsafe(32)
        print("No --secret or SESSION_SECRET given: using a random secret, so sessions end when the server stops.")
    manager = sessions.SessionManager(secret, cookie={"max_age": args.max_age}, rolling=args.rolling)
    try:
        server = build_server(args.host, args.port, manager)
    except OSError as exc:
        print(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}. Try another --port.", file=sys.stderr)
        return 1
    print(f"Serving the sessions.py demo on {server_url(server)}  "
          f"(max-age {args.max_age} s, rolling {'on' if args.rolling else 'off'})")
    print("Ctrl+C to stop", flush=True)
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops as cleanly as Ctrl+C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopped.", flush=True)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
