"""sessions.py: server-side sessions for any Python web server, compatible with express-session.

One standard-library file. A signed session-id cookie identifies a record kept by a server-side store; the
record expires; precise rules decide when the record is written, touched or left alone, and when the
browser is sent a cookie. Cookies and records are byte-compatible with Node's express-session 1.19 (and
connect-redis), so a Python app and an Express app can share live sessions.

Where express-session's users suffer, this module does better: it saves before the response starts (a
redirect always sees the saved session), turns store failures into a clean 500, raises on writes that would
be lost, parses hostile Cookie headers safely, re-signs cookies after a secret rotation, and ships a memory
store fit for a single production process.

The file reads in the order a request meets it:
cookie codec -> signing -> cookie options -> Set-Cookie values -> records -> stores -> session -> manager
(all policy) -> adapters (no policy) -> the operations CLI (``python3 sessions.py --help``).

Quick start (http.server)::

    manager = sessions.SessionManager("a long random secret")

    class Handler(sessions.SessionHandlerMixin, http.server.BaseHTTPRequestHandler):
        session_manager = manager
        def do_GET(self):
            self.session["views"] = self.session.get("views", 0) + 1
            ...
"""

from __future__ import annotations

__version__ = "1.1.0"
__license__ = "MIT"  # see LICENSE; the same licence as express-session

import contextlib
import hashlib
import heapq
import hmac
import importlib
import json
import logging
import math
import os
import random
import re
import secrets as _secrets
import sqlite3
import sys
import threading
import time
import weakref
from binascii import b2a_base64
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Generator, List, Optional, Protocol, Tuple, Union
from urllib.parse import quote, unquote_to_bytes

__all__ = [
    "SessionError",
    "ConfigurationError",
    "SessionClosedError",
    "SessionNotFoundError",
    "SerializationError",
    "StoreError",
    "sign",
    "unsign",
    "parse_cookie_header",
    "CookieOptions",
    "Codec",
    "SessionCookie",
    "Store",
    "AsyncStore",
    "MemoryStore",
    "SQLiteStore",
    "RedisStore",
    "AsyncRedisStore",
    "PostgresStore",
    "AsyncPostgresStore",
    "Session",
    "SessionInfo",
    "SessionManager",
    "SessionHandlerMixin",
    "SessionMiddleware",
    "FlaskSessionInterface",
    "FlaskTaggedJSON",
    "ASGISessionMiddleware",
    "SessionStore",
]
# Also public, but built on first lookup and so not in __all__ (a star import must work without Django):
# DjangoSessionMiddleware and DjangoSessionsConfig, which subclass Django's classes (see "Django" below).

log = logging.getLogger("sessions")

Secret = Union[str, bytes]
Seconds = Union[int, float, timedelta]

#: A Cookie header is not parsed past this many characters (browsers send at most about 4 KiB per cookie).
MAX_COOKIE_HEADER = 8192

#: At most this many verified session cookie values are remembered per manager (see ``_verified_id``).
VERIFIED_CACHE_SIZE = 1024

#: Key of the creation time (ms since the epoch) in a record, written only when ``absolute_timeout`` is set.
#: It lives among the data keys, not in the cookie object, because express-session rewrites the cookie
#: object with a fixed set of keys and would drop it; data keys survive a round trip through Node.
CREATED_KEY = "__createdAt"
#: Key of the expiry (ms since the epoch) of the cookie last sent to the browser, written only with
#: ``cookie_refresh``: the server cannot otherwise know when the browser's copy expires. A data key for the
#: same reason as ``CREATED_KEY``.
SENT_EXPIRES_KEY = "__cookieSentExpires"
#: Key of the session's owner (``Session.owner``, e.g. a user id) in a record, written only for a session that
#: has one, right after the two keys above: a data key, so express-session keeps it, and in a fixed place, so a
#: store finds it with an exact text scan (``_owner_of``) to keep its owner index in the same write.
OWNER_KEY = "__owner"
#: The longest owner accepted (characters): it is part of a Redis key and of an index.
MAX_OWNER_LENGTH = 256
_RESERVED_KEYS = frozenset(("cookie", CREATED_KEY, SENT_EXPIRES_KEY, OWNER_KEY))


# Errors ###################################################################################################


class SessionError(Exception):
    """Base class of every error this module raises on purpose."""


class ConfigurationError(SessionError, ValueError):
    """An option is missing, invalid or impossible in combination; raised at construction."""


class SessionClosedError(SessionError):
    """The session can no longer change: its response has started, or it was destroyed."""


class SessionNotFoundError(SessionError):
    """``reload()`` found no live record for the session."""


class SerializationError(SessionError, TypeError):
    """A session value (or key) cannot be stored as JSON; the message names the key."""


class StoreError(SessionError):
    """The store raised while loading or committing.

    Raised ``from None``: a store's exception may quote its key, a live session id (``KeyError(sid)``),
    and servers print exception chains to their logs. The message names only the action and the error's
    type; the original exception is kept, for debugging, as the ``original`` attribute.
    """

    def __init__(self, message: str, original: Optional[BaseException] = None) -> None:
        super().__init__(message)
        self.original = original


def _store_error(message: str, exc: BaseException) -> StoreError:
    """``raise _store_error(...) from None``: the StoreError for a store's exception, its text and chain
    free of the exception's own message."""
    return StoreError(f"{message} ({type(exc).__name__})", exc)


#: What the application is told when a store method fails (never the store's own message: it may quote an id).
_STORE_FAILURE = {method: f"the session store failed to {action} a session" for method, action in (
    ("get", "load"), ("set", "set"), ("update", "update"), ("touch", "touch"), ("destroy", "destroy"))}
_STORE_FAILURE["records_of"] = "the session store failed to list the sessions of an owner"


def _store_failure(method: str, exc: Exception) -> SessionError:
    """What a store method's exception becomes: a SessionError the store raised itself, as it is; anything
    else a StoreError naming the action, its chain hidden as ``raise ... from None`` hides it."""
    if isinstance(exc, SessionError):
        return exc
    error = _store_error(_STORE_FAILURE[method], exc)
    error.__suppress_context__ = True
    return error


# Small helpers: durations, ids #############################################################################


#: The longest duration an option accepts (100 years): expiries must stay readable ISO-8601 dates.
MAX_DURATION = 100 * 365 * 86400


def _seconds(value: Any, option: str, *, allow_zero: bool = True) -> Optional[float]:
    """Validate a duration option (seconds as int/float, or a timedelta); None passes through."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{option} must be a number of seconds or a timedelta, not {_shown(value)}")
    if not 0 <= value <= MAX_DURATION or (value == 0 and not allow_zero):  # NaN compares False; no float()
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigurationError(
            f"{option} must be a number of seconds, {bound}, at most {MAX_DURATION}; got {_shown(value)}"
        )
    return float(value)


def _shown(value: Any) -> str:
    """``repr(value)`` for an error message: short, and never failing (an int too long to print would)."""
    if isinstance(value, int) and not -(10**40) < value < 10**40:
        return f"<an int of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _default_ttl(value: Seconds) -> float:
    """A store's ``default_ttl``: required, because browser-session records have no expiry of their own."""
    seconds = _seconds(value, "default_ttl", allow_zero=False)
    if seconds is None:
        raise ConfigurationError("default_ttl must be a number of seconds: every record needs an expiry")
    return seconds


def _ms(seconds: float) -> Union[int, float]:
    """Seconds to milliseconds, as an int whenever exact, so JSON shows ``60000`` like JavaScript does."""
    ms = seconds * 1000
    return int(ms) if ms == int(ms) else ms


def _per_second(render: Callable[[time.struct_time], str]) -> Callable[[int], str]:
    """Memoise ``render(gmtime(second))`` for the latest second: under load most requests share it."""
    box: List[Tuple[Optional[int], str]] = [(None, "")]  # one tuple, replaced whole: safe across threads

    def cached(second: int) -> str:
        entry = box[0]
        if entry[0] != second:
            entry = box[0] = (second, render(time.gmtime(second)))
        return entry[1]

    return cached


def _sid_hash(sid: str) -> str:
    """A short, stable tag for a session id in logs; the id itself is a credential and is never logged."""
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _default_genid() -> str:
    """24 random bytes as base64url: 32 characters, 192 bits (express-session's ``uid-safe(24)``)."""
    return _secrets.token_urlsafe(24)


# Cookie codec #############################################################################################

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 7230 token: a valid cookie name
_DOMAIN = re.compile(r"\.?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z", re.I)
_PATH = re.compile(r"/[\x20-\x3a\x3c-\x7e]*\Z")  # printable ASCII without ';'
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_COOKIE_SEPARATORS = re.compile(r"[;,]")


def _encode_uri_component(value: str) -> str:
    """JavaScript's ``encodeURIComponent``: what express-session's cookie serializer applies to values."""
    return quote(value, safe="-_.!~*'()")


_PLAIN_SIGNED = re.compile(r"s:[A-Za-z0-9\-_.!~*'()+/]*\Z")


def _encode_signed(signed: str) -> str:
    """``encodeURIComponent("s:<id>.<mac>")``, with a fast path for ids of URL-safe characters."""
    if _PLAIN_SIGNED.match(signed):
        return "s%3A" + signed[2:].replace("+", "%2B").replace("/", "%2F")
    return _encode_uri_component(signed)


def _decode_cookie_value(value: str) -> str:
    """cookie 0.7.2's ``tryDecode``: percent-decode only if there is a ``%``; keep the raw text if invalid."""
    if len(value) > 1 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    if "%" not in value:
        return value
    # Fast path for what express-session emits: if these three escapes are the only ones, this is exact.
    common = value.replace("%3A", ":").replace("%2B", "+").replace("%2F", "/")
    if "%" not in common:
        return common
    if _BAD_ESCAPE.search(value):
        return value
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeError:  # invalid UTF-8 once decoded, or a lone surrogate (from a decoded header) in the text
        return value


def parse_cookie_header(header: Union[str, Iterable[str], None], name: Optional[str] = None) -> List[Tuple[str, str]]:
    """Parse one or several Cookie headers into ``(name, value)`` pairs, in order, keeping repeated names.

    Built for hostile input (``http.cookies.SimpleCookie`` drops a whole header when one cookie is malformed,
    and unquotes in quadratic time, CVE-2024-7592):

    - pairs are separated by ``;`` and also by ``,``, because some WSGI servers join repeated Cookie headers
      with a comma; a segment without ``=`` or with an empty name is skipped, and never hides its neighbours;
    - names and values are stripped of space and tab only, so ``"\\xa0sid"`` is not ``"sid"``;
    - a value in double quotes is unquoted, then percent-decoded (``decodeURIComponent``) when it holds a
      ``%``; an invalid escape or invalid UTF-8 keeps the raw text;
    - at most ``MAX_COOKIE_HEADER`` characters are read; the work is linear in that.

    With ``name``, only the pairs of that name are returned (and only those are decoded).
    """
    if header is None:  # no Cookie header at all (a new visitor): common enough to skip the exception below
        header = ""
    elif not isinstance(header, str):
        try:
            header = "; ".join([h for h in header if isinstance(h, str)])  # type: ignore[union-attr]
        except TypeError:  # anything else that is not a header: no cookies
            header = ""
    if len(header) > MAX_COOKIE_HEADER:
        log.debug("Cookie header of %d characters read only to %d", len(header), MAX_COOKIE_HEADER)
        header = header[:MAX_COOKIE_HEADER]
    if name is not None:
        return _named_pairs(header, name) if name else []
    pairs = []
    for segment in _COOKIE_SEPARATORS.split(header):
        eq = segment.find("=")
        if eq < 0:
            continue
        key = segment[:eq].strip(" \t")
        if key:
            pairs.append((key, _decode_cookie_value(segment[eq + 1 :].strip(" \t"))))
    return pairs


def _named_pairs(header: str, name: str) -> List[Tuple[str, str]]:
    """``parse_cookie_header`` for one non-empty name: the general loop, except that only the ``;``-segments
    containing the name are cut up further (a pair's name is part of its segment). Same result for every
    name, which a property test checks; ``str.split`` in C costs less than the regex split of every
    neighbour (the session cookie is read on every request)."""
    pairs: List[Tuple[str, str]] = []
    for segment in header.split(";"):
        if name in segment:
            for part in segment.split(","):
                key, eq, value = part.partition("=")
                if eq and key.strip(" \t") == name:
                    pairs.append((name, _decode_cookie_value(value.strip(" \t"))))
    return pairs


def _path_matches(request_path: str, cookie_path: str) -> bool:
    """RFC 6265 section 5.1.4 path-match: by whole segments, so ``/admin`` does not match ``/administrator``."""
    if request_path == cookie_path:
        return True
    return request_path.startswith(cookie_path) and (
        cookie_path.endswith("/") or request_path[len(cookie_path)] == "/"
    )


# Signing ##################################################################################################


def _key(secret: Secret) -> hmac.HMAC:
    if isinstance(secret, str):
        try:
            secret = secret.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError("secret must be valid Unicode text (it holds a lone surrogate)") from None
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        raise ConfigurationError("secret must be a non-empty str or bytes (or a non-empty list of them)")
    return hmac.new(bytes(secret), digestmod=hashlib.sha256)  # keyed once; each MAC works on a .copy()


def _mac(key: hmac.HMAC, value: bytes) -> bytes:
    """Standard base64 of HMAC-SHA256 without ``=`` padding (node cookie-signature 1.0.x)."""
    mac = key.copy()
    mac.update(value)
    return b2a_base64(mac.digest(), newline=False).rstrip(b"=")


def _keys(secret: Union[Secret, Sequence[Secret]]) -> Tuple[hmac.HMAC, ...]:
    """Normalise a secret or a list of secrets to HMAC keys; the first one signs, every one verifies."""
    if isinstance(secret, (str, bytes, bytearray)):
        return (_key(secret),)
    if isinstance(secret, Sequence) and secret:
        return tuple(_key(s) for s in secret)
    raise ConfigurationError(
        "secret is required: pass a long random str or bytes, or a non-empty list of them (the first signs)"
    )


def sign(value: str, secret: Secret) -> str:
    """``value + "." + mac``, exactly like node's cookie-signature ``sign``."""
    if not isinstance(value, str):
        raise TypeError("sign() needs a str value")
    return _sign(value, _key(secret))


def _sign(value: str, key: hmac.HMAC) -> str:
    return value + "." + _mac(key, value.encode("utf-8")).decode("ascii")


def _unsign(signed: str, keys: Tuple[hmac.HMAC, ...]) -> Tuple[Optional[str], int]:
    """The signed value and the index of the key that verified it, or ``(None, -1)``.

    Splits at the last ``.`` (values may contain dots) and compares the MAC bytes in constant time with
    each key in order.
    """
    try:
        raw = signed.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: never something we signed
        return None, -1
    dot = raw.rfind(b".")
    if dot < 0:
        return None, -1
    value, given = raw[:dot], raw[dot + 1 :]
    for index, key in enumerate(keys):
        if hmac.compare_digest(given, _mac(key, value)):
            return value.decode("utf-8"), index
    return None, -1


def unsign(signed: str, secrets: Union[Secret, Sequence[Secret]]) -> Optional[str]:
    """The value of ``signed`` if its signature verifies with one of ``secrets``, else None."""
    if not isinstance(signed, str):
        return None
    return _unsign(signed, _keys(secrets))[0]


# Cookie options ###########################################################################################

_SAME_SITE = {"strict": "Strict", "lax": "Lax", "none": "None"}
_PRIORITY = {"low": "Low", "medium": "Medium", "high": "High"}


@dataclass(frozen=True)
class CookieOptions:
    """Attributes of the session cookie. Validated at construction; every value is safe to emit.

    - ``path`` (``"/"``): the cookie's path; requests outside it (matched by segment) get no session.
    - ``domain`` (None): host-only cookie unless set.
    - ``max_age`` (None): lifetime in seconds (int, float or timedelta), sliding on every committed request;
      None makes a browser-session cookie (its record still expires from the store, see ``MemoryStore``).
    - ``http_only`` (True): hide the cookie from JavaScript.
    - ``secure`` (False): True, False, or ``"auto"`` (Secure exactly when the request is HTTPS, decided on
      every response). A Secure cookie is never sent over plain HTTP.
    - ``same_site`` (``"Lax"``): ``"Strict"``, ``"Lax"``, ``"None"`` (needs ``secure=True``) or None.
    - ``partitioned`` (False): CHIPS partitioned cookie (needs ``secure=True``).
    - ``priority`` (None): ``"Low"``, ``"Medium"`` or ``"High"``.
    """

    path: str = "/"
    domain: Optional[str] = None
    max_age: Optional[Seconds] = None
    http_only: bool = True
    secure: Union[bool, str] = False
    same_site: Optional[str] = "Lax"
    partitioned: bool = False
    priority: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not _PATH.match(self.path):
            raise ConfigurationError(
                f"cookie path must start with '/' and be printable ASCII without ';': {_shown(self.path)}"
            )
        if self.domain is not None and (not isinstance(self.domain, str) or not _DOMAIN.match(self.domain)):
            raise ConfigurationError(f"cookie domain must be a host name like 'example.com': {_shown(self.domain)}")
        object.__setattr__(self, "max_age", _seconds(self.max_age, "cookie max_age"))
        for flag in ("http_only", "partitioned"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(f"cookie {flag} must be True or False")
        if self.secure not in (True, False, "auto") or not isinstance(self.secure, (bool, str)):
            raise ConfigurationError(f"cookie secure must be True, False or 'auto': {_shown(self.secure)}")
        object.__setattr__(self, "same_site", self._choice(self.same_site, _SAME_SITE, "same_site"))
        object.__setattr__(self, "priority", self._choice(self.priority, _PRIORITY, "priority"))
        if self.same_site == "None" and self.secure is not True:
            raise ConfigurationError("same_site='None' needs secure=True (browsers reject it otherwise)")
        if self.partitioned and self.secure is not True:
            raise ConfigurationError("partitioned=True needs secure=True (browsers reject it otherwise)")

    @staticmethod
    def _choice(value: Optional[str], allowed: Dict[str, str], option: str) -> Optional[str]:
        if value is None:
            return None
        if isinstance(value, str) and value.lower() in allowed:
            return allowed[value.lower()]
        raise ConfigurationError(f"cookie {option} must be one of {sorted(allowed.values())} or None: {_shown(value)}")

    @classmethod
    def coerce(cls, value: Union["CookieOptions", Dict[str, Any], None]) -> "CookieOptions":
        """Accept a CookieOptions, a dict of its fields (unknown keys are an error) or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in fields(cls)}
            if unknown:
                raise ConfigurationError(f"unknown cookie option(s): {', '.join(sorted(map(str, unknown)))}")
            return cls(**value)
        raise ConfigurationError(f"cookie must be a CookieOptions or a dict, not {type(value).__name__}")


# Set-Cookie values ########################################################################################


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# A per-second cache: the Expires date of most responses shares the second.
_http_second = _per_second(
    lambda t: f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
    f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
)


def _http_date(ms: int) -> str:
    """``Tue, 14 Nov 2023 22:14:20 GMT`` (the ``Expires`` attribute, second precision like express)."""
    return _http_second(ms // 1000)


class _SetCookieFormat:
    """Set-Cookie values for one cookie name and validated options, attributes in the order of node's
    ``cookie.serialize`` (Max-Age first). The parts that never change are built once, here."""

    __slots__ = ("name", "_scope", "_flags")

    def __init__(self, name: str, options: CookieOptions) -> None:
        self.name = name
        domain = f"; Domain={options.domain}" if options.domain else ""
        self._scope = f"{domain}; Path={options.path}"
        self._flags = {}  # by "Secure or not": the attributes after Expires
        for secure in (False, True):
            flags = [
                "HttpOnly" if options.http_only else "",
                "Secure" if secure else "",
                "Partitioned" if options.partitioned else "",
                f"Priority={options.priority}" if options.priority else "",
                f"SameSite={options.same_site}" if options.same_site else "",
            ]
            self._flags[secure] = "".join("; " + flag for flag in flags if flag)
        for part in (self._scope, *self._flags.values()):
            if _HEADER_UNSAFE.search(part):  # unreachable with validated options: a last line of defence
                raise ConfigurationError("cookie options would put a control character in Set-Cookie")

    def value(self, value: str, max_age: Optional[int], expires_ms: Optional[int], secure: bool) -> str:
        """One Set-Cookie value. ``value`` comes from ``_encode_signed``, so it holds cookie-octets only."""
        return "".join((
            self.name, "=", value,
            "" if max_age is None else f"; Max-Age={max_age}",
            self._scope,
            "" if expires_ms is None else f"; Expires={_http_date(expires_ms)}",
            self._flags[secure],
        ))

    def clearing(self, secure: bool) -> str:
        """The value that expires the browser's cookie (same name, path and domain)."""
        return self.value("", 0, 0, secure)

# Records ##################################################################################################
# JSON and ISO-8601 times as JavaScript writes them, then the record format itself.


def _json_encoder() -> Callable[[Any], str]:
    """Compact JSON without ASCII escaping or NaN, like JavaScript's ``JSON.stringify``.

    ``json.JSONEncoder.encode`` builds a new C encoder on every call, which doubles the cost of encoding a
    small session; this builds it once. Where the C accelerator is missing or differs, the plain encoder
    is used.
    """
    plain = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return plain

    def unsupported(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    try:
        c_encoder = make(None, unsupported, json.encoder.encode_basestring, None, ":", ",", False, False, False)

        def fast(value: Any) -> str:
            return "".join(c_encoder(value, 0))

        sample = {"a": [1, 2.5, None, True, "\u00e9\n"], "b": {}}
        return fast if fast(sample) == plain(sample) else plain
    except Exception:  # a different C signature in some Python version
        return plain


_python_json = _json_encoder()  # built once: halves the cost of encoding a small session

# Where Python's text for a float differs from JavaScript's (1.0, 1e+16, 5e-07, -0.0), it matches this; so
# does some other text (a string "v1.0"), which then only costs the exact path.
_FLOAT_TEXT = re.compile(r"[0-9](?:\.0|e[+-])")


def _as_javascript(text: str, value: Any) -> str:
    """Python's JSON ``text`` of ``value``, or JavaScript's where they may differ: only for some floats, so
    the substring searches (much faster than the pattern) spare most records the exact path."""
    if ("e+" in text or "e-" in text or ".0" in text) and _FLOAT_TEXT.search(text):
        return _js_json(value)
    return text


def _encode_json(value: Any) -> str:
    """``JSON.stringify(value)``, byte for byte. Python's (C) encoder writes everything as JavaScript does
    but some floats; when its text may hold one of those, the value is written again, exactly, in Python."""
    return _as_javascript(_python_json(value), value)


_encode_string = json.encoder.encode_basestring  # without ASCII escaping, like JSON.stringify
_KEY_WORDS = {True: "true", False: "false", None: "null"}


def _js_json(value: Any) -> str:
    """``JSON.stringify`` for what Python's encoder accepted (so no cycle, nesting bounded), with floats as
    ``_js_number`` writes them; dict keys become text as Python's encoder makes them."""
    if isinstance(value, str):
        return _encode_string(value)
    if value is None or value is True or value is False:
        return _KEY_WORDS[value]
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_encode_string(_js_key(k))}:{_js_json(v)}" for k, v in value.items()) + "}"
    return "[" + ",".join(map(_js_json, value)) + "]"  # a list or a tuple


def _js_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or key is True or key is False:
        return _KEY_WORDS[key]
    return _js_number(key) if isinstance(key, float) else int.__repr__(key)


def _js_number(number: float) -> str:
    """JavaScript's ``Number#toString`` for a finite float (ECMA-262 Number::toString): the same shortest
    round-trip digits as Python's repr, positional for 1e-7 <= |x| < 1e21, else ``d.ddde+N``; ``-0`` is 0."""
    if number == 0:
        return "0"
    mantissa, _, exponent = float.__repr__(abs(number)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))  # value = 0.digits * 10**point
    digits = digits.rstrip("0")
    size = len(digits)
    if size <= point <= 21:
        text = digits + "0" * (point - size)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        text = digits[0] + ("." + digits[1:] if size > 1 else "") + ("e+" if point > 0 else "e-") + str(abs(point - 1))
    return "-" + text if number < 0 else text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JavaScript cannot store it either)")


_raw_decode_json = json.JSONDecoder(parse_constant=_no_constants).raw_decode


def _decode_json(text: str) -> Any:
    """``json.loads`` for a whole document, without its per-call wrapper."""
    if text[:1].isspace():
        text = text.lstrip()
    value, end = _raw_decode_json(text)
    if end != len(text) and text[end:].strip():
        raise ValueError(f"extra data after the JSON document at {end}")
    return value


class Codec(Protocol):
    """What ``SessionManager(codec=...)`` takes: how session values that JSON has no type for are stored.

    Each data value goes through ``encode`` on its way into the record (the result must be JSON: dict, list,
    str, int, float, bool, None) and through ``decode`` on its way out, so the record stays JSON that
    express-session reads. A value that would not come back the same, type included, is refused when it
    is assigned (``SerializationError``). ``FlaskSessionInterface`` uses Flask's tagged JSON this way.
    Without a codec (the default) values are plain JSON, as express-session stores them.
    """

    def encode(self, value: Any) -> Any:
        """The JSON-able form of ``value``."""

    def decode(self, value: Any) -> Any:
        """The value whose JSON-able form is ``value`` (as ``encode`` made it, read back from JSON)."""


_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)\Z", re.ASCII)

# A per-second cache: records written in the same second share their expires text.
_iso_second = _per_second(
    lambda t: f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
)


def _iso(ms: int) -> str:
    """``2023-11-14T22:14:20.000Z``: JavaScript's ``Date.prototype.toISOString`` (what express stores)."""
    return f"{_iso_second(ms // 1000)}.{ms % 1000:03d}Z"


def _parse_iso(text: str) -> Optional[int]:
    """Milliseconds since the epoch of an ISO-8601 time with seconds and a zone (``Z`` or ``+hh:mm``), or
    None if it is not one. Strict: ASCII digits only (the pattern), and a real time (``fromisoformat``
    refuses February 30th, hour 24, second 60)."""
    match = _ISO.match(text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    try:
        seconds = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    except (ValueError, OverflowError):
        return None
    return int(seconds) * 1000 + (int(fraction[:3].ljust(3, "0")) if fraction else 0)


class _RecordFormat:
    """Record text for validated cookie options: ``{"cookie":{...},<data>}`` exactly as express-session
    writes it. The cookie object's key order is ``Cookie#data``'s, a byte contract with Node; the parts
    that never change are built once, here."""

    __slots__ = ("_middle", "_tails")

    def __init__(self, options: CookieOptions) -> None:
        middle: Dict[str, Any] = {}
        if options.partitioned:
            middle["partitioned"] = True
        if options.priority:
            middle["priority"] = options.priority.lower()
        pairs = "".join(f",{_encode_json(key)}:{_encode_json(value)}" for key, value in middle.items())
        self._middle = pairs + ',"expires":'
        self._tails = {}  # by "Secure or not": the keys after expires
        for secure in (False, True):
            tail: Dict[str, Any] = {}
            if options.secure is not False:
                tail["secure"] = secure
            tail["httpOnly"] = options.http_only
            if options.domain:
                tail["domain"] = options.domain
            tail["path"] = options.path
            if options.same_site:
                tail["sameSite"] = options.same_site.lower()
            self._tails[secure] = "," + _encode_json(tail)[1:]

    def text(
        self, original_max_age_ms: Optional[float], expires_ms: Optional[int], secure: bool,
        created_ms: Optional[int], data_json: str, sent_expires_ms: Optional[int], owner: Optional[str],
    ) -> str:
        """The record; the parts after the cookie object are ``after_cookie``'s."""
        return "".join((
            '{"cookie":{"originalMaxAge":', "null" if original_max_age_ms is None else str(original_max_age_ms),
            self._middle, "null" if expires_ms is None else f'"{_iso(expires_ms)}"',
            self._tails[secure], self.after_cookie(created_ms, data_json, sent_expires_ms, owner),
        ))

    @staticmethod
    def after_cookie(
        created_ms: Optional[int], data_json: str, sent_expires_ms: Optional[int], owner: Optional[str]
    ) -> str:
        """The record's text after its cookie object: ``created_ms``, ``sent_expires_ms`` and ``owner`` (None:
        left out) as ``CREATED_KEY``, ``SENT_EXPIRES_KEY`` and ``OWNER_KEY``, then the data keys, and the end."""
        created = "" if created_ms is None else f',"{CREATED_KEY}":{created_ms}'
        sent = "" if sent_expires_ms is None else f',"{SENT_EXPIRES_KEY}":{sent_expires_ms}'
        owned = "" if owner is None else f',"{OWNER_KEY}":{_encode_json(owner)}'
        return created + sent + owned + ("}" if data_json == "{}" else "," + data_json[1:])


def _cookie_end(record: str) -> int:
    """The index just past a record's leading cookie object, or -1 when it cannot be found exactly.

    Exact when the record starts with the cookie object, as express-session and this module write them.
    Without escapes, quotes pair up: an even count of them before the first ``}`` means that brace is
    outside any string, and with no nested object it closes the cookie object.
    """
    if not record.startswith('{"cookie":{'):
        return -1
    end = record.find("}", 11) + 1
    cookie_text = record[10:end]
    if not end or "\\" in cookie_text or "{" in cookie_text[1:] or cookie_text.count('"') % 2:
        return -1
    return end


def _data_text(record: str) -> Optional[str]:
    """The data part of a record's text as a JSON object (``{"views":1}``), or None when it cannot be cut
    out exactly. Saves re-encoding the data on every load. For text that is valid but not in canonical
    form the comparison at commit merely sees a change and writes once more, which is harmless."""
    end = _cookie_end(record)
    if end < 0:
        return None
    if record[end:] == "}":
        return "{}"
    return "{" + record[end + 1 :] if record[end] == "," else None


#: Where a record this module writes holds its owner: right after the cookie object and the time keys.
_OWNER_AFTER_COOKIE = re.compile(
    rf'(?:,"{CREATED_KEY}":[0-9]+)?(?:,"{SENT_EXPIRES_KEY}":[0-9]+)?,"{OWNER_KEY}":"([^"\\\x00-\x1f]*)"[,}}]'
)


def _owner_of(record: str) -> Optional[str]:
    """The owner (``OWNER_KEY``) of a record's text, or None. What stores call on every write to keep their
    owner index: an exact text scan for the records this module writes (and express-session writes back,
    as it keeps key order), a JSON parse only for other text that mentions the key."""
    if OWNER_KEY not in record and "\\u" not in record:  # JSON spells the key so, or with escapes
        return None
    end = _cookie_end(record)
    if end > 0:
        found = _OWNER_AFTER_COOKIE.match(record, end)
        if found is not None:
            return found.group(1)
    try:
        owner = _decode_json(record).get(OWNER_KEY)
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None
    return owner if _is_owner(owner) else None


def _is_owner(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_OWNER_LENGTH and not _SURROGATE.search(value)


_MAX_TIME_MS = 8.64e15  # the latest time a JavaScript Date holds (year 275760)

#: A parsed record: data, originalMaxAge (ms), expires (ms), created (ms), the data's JSON text when it
#: could be cut out of the record exactly (else None), the expiry of the cookie last sent (ms), the owner
_ParsedRecord = Tuple[
    Dict[str, Any], Any, Optional[int], Optional[int], Optional[str], Optional[int], Optional[str]
]


def _pop_ms(parsed: Dict[str, Any], key: str) -> Optional[int]:
    """Take one of our data keys holding a time in ms (``CREATED_KEY``, ``SENT_EXPIRES_KEY``) out of a record."""
    value = parsed.pop(key, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= _MAX_TIME_MS:
        raise ValueError(f"{key} is not a time in milliseconds since the epoch")
    return int(value)


def _parse_record(record: str, store_deadline_ms: Optional[int] = None) -> _ParsedRecord:
    """Read a record written by this module or by express-session. Raises ValueError (or TypeError,
    KeyError, AttributeError, RecursionError) when it is corrupt. With ``store_deadline_ms`` (a store that
    enforces expiry itself, SPEC 8) a set ``cookie.expires`` is that deadline; its text is not read."""
    parsed = _decode_json(record)
    cookie = parsed["cookie"]
    original = cookie.get("originalMaxAge")
    expires = cookie.get("expires")
    if original is not None and (
        isinstance(original, bool) or not isinstance(original, (int, float))
        or not 0 <= original <= MAX_DURATION * 1000
    ):
        raise ValueError("originalMaxAge is not a number of milliseconds in range")
    if expires is None or expires is False:
        expires_ms = None
    elif not isinstance(expires, str):
        raise ValueError("expires is not an ISO-8601 time")
    elif store_deadline_ms is not None:
        expires_ms = store_deadline_ms
    else:
        expires_ms = _parse_iso(expires)
        if expires_ms is None:
            raise ValueError("expires is not an ISO-8601 time")
    created, sent = _pop_ms(parsed, CREATED_KEY), _pop_ms(parsed, SENT_EXPIRES_KEY)
    owner = parsed.pop(OWNER_KEY, None)
    if owner is not None and not _is_owner(owner):
        raise ValueError(f"{OWNER_KEY} is not a non-empty string of at most {MAX_OWNER_LENGTH} characters")
    del parsed["cookie"]
    data_text = None if created is not None or sent is not None or owner is not None else _data_text(record)
    return parsed, original, expires_ms, created, data_text, sent, owner


def _with_cookie_of(stored: str, fresh: str) -> str:
    """``stored`` with its cookie object replaced by ``fresh``'s: what a touch writes, keeping the data
    (and creation time) that the store holds, so a touch never undoes a concurrent write."""
    stored_end, fresh_end = _cookie_end(stored), _cookie_end(fresh)
    if stored_end > 0 and fresh_end > 0:
        return fresh[:fresh_end] + stored[stored_end:]
    try:
        record = _decode_json(stored)
        record["cookie"] = _decode_json(fresh)["cookie"]
        return _encode_json(record)
    except (ValueError, TypeError, KeyError, RecursionError):  # not records: keep what is stored
        return stored


class _Merge:
    """A loaded session's change for ``Store.update`` (``SessionManager._merge`` builds it): ``record``
    when the stored text after its cookie object is still ``unchanged`` (no concurrent write: the usual
    case), else ``merge(stored)``. Any store just calls it; RedisStore also makes the first check inside
    Redis (``_SET_IF_UNCHANGED``), saving the round trips of ``WATCH`` and ``GET`` in the usual case."""

    __slots__ = ("record", "unchanged", "_merge")

    def __init__(self, record: str, unchanged: str, merge: Callable[[str], str]) -> None:
        self.record, self.unchanged, self._merge = record, unchanged, merge

    def __call__(self, stored: str) -> str:
        end = _cookie_end(stored)
        if end > 0 and stored[end:] == self.unchanged:
            return self.record
        return self._merge(stored)


# Stores ###################################################################################################


class Store:
    """Where session records live. Subclass it to keep sessions elsewhere (Redis, SQL, files, ...).

    A record is the session's JSON text (express-session's format, see ``SessionManager``); stores keep it
    as an opaque string. ``expires`` is the record's expiry in seconds since the epoch (per the manager's
    clock), or None for a browser-session cookie: then the store picks a default time-to-live of its own.

    The contract (each method's docstring says more):

    - ``get(sid)``: None when there is no live record; else the record text, or a tuple
      ``(record_text, expires_at)`` when the store enforces expiry itself.
    - ``set(sid, record, expires)``: create or replace, all or nothing.
    - ``update(sid, change, expires)``: replace a live record by ``change(record as stored now)``,
      atomically; never create one. Returns whether there was a live record.
    - ``touch(sid, record, expires)``: extend a live record; never create one, never replace its data.
      Returns whether there was a live record (None: unknown, taken as live).
    - ``destroy(sid)``: delete; a missing record is not an error.
    - Optional: ``clear()``, ``__len__()`` (live records) and ``ids()``.
    - Optional, the owner index: ``records_of(owner)``, the live records whose ``OWNER_KEY`` is ``owner``
      (``SessionManager.sessions_of`` and ``end_sessions_of`` need it; without it they raise a
      ConfigurationError). Keep the index in the same atomic step as the record: ``_owner_of(record)``
      reads a record's owner with an exact text scan.

    Missing is never an error; any exception means the store failed, and the request fails with a 500
    (nothing is written, no cookie is sent). Methods may be called from several threads at once (e.g.
    under ``ThreadingHTTPServer``).
    """

    #: True when the methods do I/O that would block an event loop: the ASGI adapter then runs them in a
    #: worker thread. A store that only touches memory sets it to False.
    blocking: bool = True

    def get(self, sid: str) -> Union[str, Tuple[str, Optional[float]], None]:
        """The record of ``sid``, or None when there is none or it has expired.

        Return the record text, or ``(record_text, expires_at)`` where ``expires_at`` is when the store
        itself will drop the record (seconds since the epoch, per the store's clock), or None if it holds
        it with no deadline. A tuple makes the store the authority on expiry: the manager then trusts
        ``expires_at`` instead of the record's ``cookie.expires`` (which Node's connect-redis leaves stale
        when it touches with ``EXPIRE``). For plain text the manager checks ``cookie.expires`` itself, so
        a lax store cannot revive a dead session."""
        raise NotImplementedError(f"{type(self).__name__} must implement get(sid)")

    def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        """Create or replace the record of ``sid``, all or nothing, to expire at ``expires`` (seconds since
        the epoch), or after the store's default time-to-live when ``expires`` is None."""
        raise NotImplementedError(f"{type(self).__name__} must implement set(sid, record, expires)")

    def update(self, sid: str, change: Callable[[str], str], expires: Optional[float]) -> bool:
        """Replace the live record of ``sid`` by ``change(record)``, where ``record`` is the text stored
        now, to expire as ``set`` would; return True. With no live record (destroyed, expired, never
        written) write nothing and return False: a request that loaded a session before another one
        logged it out (or regenerated its id) must not bring the old record back.

        The manager writes every change of a loaded session through here: ``change`` applies that
        request's changes to whatever the record holds by then, so concurrent requests of one session
        keep each other's keys. ``change`` is a pure function of its argument and may be called more
        than once (a store that retries on a conflict calls it again with the newer text).

        A store should make this one atomic step of its backend (a lock, a transaction, Redis's
        ``WATCH``/``MULTI``). This default does get, change, set: a third-party store keeps working and
        gains the check that the record is still there, but two requests committing at the same moment
        can still lose one's changes, as every write could before."""
        stored = self.get(sid)
        if isinstance(stored, tuple):
            stored = stored[0]
        if stored is None:
            return False
        self.set(sid, change(stored), expires)
        return True

    def touch(self, sid: str, record: str, expires: Optional[float]) -> Optional[bool]:
        """Mark an unchanged session as active: move its expiry to ``expires`` and take the cookie object
        of ``record`` (its fresh ``expires``), keeping the stored data. Return whether there was a live
        record to touch; None (what older stores return) means "unknown" and counts as live.

        It must neither create a record (another request may have destroyed it: a logout must not be
        undone) nor replace the stored data (another request may have changed it). When it reports
        False, the response sends no cookie for the dead id. This default is ``update`` with the cookie
        object of ``record``."""
        return self.update(sid, lambda stored: _with_cookie_of(stored, record), expires)

    def destroy(self, sid: str) -> None:
        """Delete the record of ``sid``; deleting a missing one is not an error."""
        raise NotImplementedError(f"{type(self).__name__} must implement destroy(sid)")

    def clear(self) -> None:
        """Optional: delete every record."""
        raise NotImplementedError(f"{type(self).__name__} cannot clear")

    def __len__(self) -> int:
        """Optional: the number of live records."""
        raise NotImplementedError(f"{type(self).__name__} cannot count its sessions")

    def ids(self) -> List[str]:
        """Optional: the ids of the live records."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its sessions")

    def records_of(self, owner: str) -> Dict[str, Union[str, Tuple[str, Optional[float]]]]:
        """Optional, the owner index: ``{id: what get(id) returns}`` for every live record whose owner
        (``OWNER_KEY``, see ``_owner_of``) is ``owner``, found without reading the other records. Entries
        the index holds for records that expired, were destroyed or changed owner are left out (and may be
        dropped from the index here: expired sessions leave it without a background job)."""
        raise NotImplementedError(f"{type(self).__name__} has no owner index")


class AsyncStore:
    """The ``Store`` contract with ``async def`` methods, for backends with an asyncio client
    (``redis.asyncio``, psycopg's ``AsyncConnectionPool``). Subclass it and override ``get``, ``set`` and
    ``destroy`` (and ``update`` and ``touch`` with one atomic step of the backend where it has one); each
    method means exactly what the ``Store`` method of the same name means, returns the same, and raises
    the same way. The optional ones are ``clear()``, ``count()`` (``len`` cannot be awaited), ``ids()`` and
    ``records_of()``.

    A manager whose store is async serves async code: ``ASGISessionMiddleware`` (no worker thread at
    all), ``manager.aopen``/``acommit``, and ``await session.asave()``, ``areload()``, ``adestroy()``,
    ``aflush()``. Sync calls that would need the store (``manager.open`` with a session cookie,
    ``session.save()``) raise ``SessionError`` saying so. A method cancelled while it waits (the client
    went away) must leave the record as it was or as written, never half-written: one command, script or
    transaction per write.
    """

    async def get(self, sid: str) -> Union[str, Tuple[str, Optional[float]], None]:
        """As ``Store.get``."""
        raise NotImplementedError(f"{type(self).__name__} must implement get(sid)")

    async def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        """As ``Store.set``."""
        raise NotImplementedError(f"{type(self).__name__} must implement set(sid, record, expires)")

    async def update(self, sid: str, change: Callable[[str], str], expires: Optional[float]) -> bool:
        """As ``Store.update``; this default is get, change, set (not atomic: see ``Store.update``)."""
        stored = await self.get(sid)
        if isinstance(stored, tuple):
            stored = stored[0]
        if stored is None:
            return False
        await self.set(sid, change(stored), expires)
        return True

    async def touch(self, sid: str, record: str, expires: Optional[float]) -> Optional[bool]:
        """As ``Store.touch``; this default is ``update`` with the cookie object of ``record``."""
        return await self.update(sid, lambda stored: _with_cookie_of(stored, record), expires)

    async def destroy(self, sid: str) -> None:
        """As ``Store.destroy``."""
        raise NotImplementedError(f"{type(self).__name__} must implement destroy(sid)")

    async def clear(self) -> None:
        """Optional: delete every record."""
        raise NotImplementedError(f"{type(self).__name__} cannot clear")

    async def count(self) -> int:
        """Optional: the number of live records (``Store.__len__``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot count its sessions")

    async def ids(self) -> List[str]:
        """Optional: the ids of the live records."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its sessions")

    async def records_of(self, owner: str) -> Dict[str, Union[str, Tuple[str, Optional[float]]]]:
        """Optional, the owner index: as ``Store.records_of`` (``manager.asessions_of`` awaits it)."""
        raise NotImplementedError(f"{type(self).__name__} has no owner index")


class MemoryStore(Store):
    """A thread-safe in-memory store for a single process, fit for production there.

    - Records are JSON text, so no mutable state is shared between requests.
    - Every record expires: at its own ``expires``, or ``default_ttl`` seconds (one day by default) after
      its last write or touch when it has none (browser-session cookies). Expired records are never
      returned.
    - Pruning needs no background thread: each write first removes up to ``PRUNE_BATCH`` expired records
      from an index of expiry seconds, earliest first, so its cost grows with the number expired, not with
      the number stored. ``prune()`` removes every expired record at once.
    - ``max_sessions`` bounds the store: when full, a new session evicts those closest to expiry (to the
      second).

    The index maps each expiry second to the ids written with a deadline in it (a heap orders the seconds).
    A later write leaves the id's earlier entry behind, stale; stale entries are skipped when their second
    is pruned, and the index is rebuilt when they outnumber the records, which keeps memory linear (about
    220 bytes per session besides the record text, the id included, measured by ``bench/run.py``).

    The owner index (``records_of``) maps each owner to the ids of its records, updated under the same lock
    as the records: a record that is written, replaced, expired, evicted or destroyed moves with it.
    """

    #: Index entries examined per write, so that one request never pays for a mass expiry.
    PRUNE_BATCH = 64
    blocking = False  # memory only: safe to call from an event loop

    def __init__(
        self,
        *,
        max_sessions: Optional[int] = None,
        default_ttl: Seconds = 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_sessions is not None and (
            isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1
        ):
            raise ConfigurationError(f"max_sessions must be a positive int or None: {_shown(max_sessions)}")
        self.max_sessions = max_sessions
        self.default_ttl = _default_ttl(default_ttl)
        self.clock = clock
        self._lock = threading.Lock()
        self._records: Dict[str, Tuple[str, float]] = {}  # id -> (record text, deadline)
        self._owners: Dict[str, set] = {}  # owner -> ids of its records
        self._owner_of_id: Dict[str, str] = {}  # id -> owner, for the records that have one
        self._reindex()

    def get(self, sid: str) -> Optional[Tuple[str, float]]:
        """``(record, deadline)``: the store drops every record at its deadline, so it is the authority."""
        with self._lock:
            entry = self._records.get(sid)
            if entry is None:
                return None
            if entry[1] <= self.clock():
                self._remove(sid)
                return None
            return entry

    def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        now = self.clock()
        with self._lock:
            self._put(sid, record, expires, now)

    def update(self, sid: str, change: Callable[[str], str], expires: Optional[float]) -> bool:
        """Atomic: ``change`` runs under the store's lock, so no other write comes between reading the
        record and replacing it. A missing or expired record stays missing (False)."""
        return self._change(sid, change, expires)

    def touch(self, sid: str, record: str, expires: Optional[float]) -> bool:
        """Atomic like ``update`` (and not through it, so a subclass counting writes in ``update`` does not
        see touches): a missing or expired record stays missing (False)."""
        return self._change(sid, lambda stored: _with_cookie_of(stored, record), expires)

    def _change(self, sid: str, change: Callable[[str], str], expires: Optional[float]) -> bool:
        now = self.clock()
        with self._lock:
            entry = self._records.get(sid)
            if entry is None or entry[1] <= now:
                return False
            self._put(sid, change(entry[0]), expires, now)
            return True

    def destroy(self, sid: str) -> None:
        with self._lock:
            self._remove(sid)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._owners.clear()
            self._owner_of_id.clear()
            self._reindex()

    def prune(self) -> int:
        """Remove every expired record now; returns how many were removed."""
        with self._lock:
            now = self.clock()
            return self._prune(now, None) + self._drop_expired_of_this_second(now)

    def __len__(self) -> int:
        self.prune()
        return len(self._records)

    def ids(self) -> List[str]:
        self.prune()
        with self._lock:
            return list(self._records)

    def records_of(self, owner: str) -> Dict[str, Tuple[str, float]]:
        """``{id: (record, deadline)}`` of the live records of ``owner``; expired ones are removed."""
        with self._lock:
            now, records = self.clock(), self._records
            expired = [sid for sid in self._owners.get(owner, ()) if records[sid][1] <= now]
            for sid in expired:
                self._remove(sid)
            return {sid: records[sid] for sid in self._owners.get(owner, ())}

    def expiry(self, sid: str) -> Optional[float]:
        """When the store will drop ``sid`` (seconds since the epoch), or None if it holds no such record."""
        with self._lock:
            entry = self._records.get(sid)
            return None if entry is None else entry[1]

    # The rest runs with the lock held.

    def _put(self, sid: str, record: str, expires: Optional[float], now: float) -> None:
        if self._seconds and self._seconds[0] + 1 <= now:
            self._prune(now, self.PRUNE_BATCH)
        deadline = _deadline(expires, now, self.default_ttl)
        if deadline <= now:
            self._remove(sid)
            return
        old = self._records.get(sid)
        if old is None and self.max_sessions is not None and len(self._records) >= self.max_sessions:
            self._drop_expired_of_this_second(now)
            while len(self._records) >= self.max_sessions and self._evict_earliest():
                pass
        self._records[sid] = (record, deadline)
        self._index_owner(sid, _owner_of(record))
        if old is None or int(old[1]) != int(deadline):  # same second: its entry is already there
            self._index(sid, deadline)
            if self._entries > 2 * len(self._records) + 1024:  # mostly stale entries: rebuild
                self._reindex()

    def _index_owner(self, sid: str, owner: Optional[str]) -> None:
        previous = self._owner_of_id.get(sid)
        if owner == previous:
            return
        if previous is not None:
            self._unindex_owner(sid, previous)
        if owner is not None:
            self._owner_of_id[sid] = owner
            self._owners.setdefault(owner, set()).add(sid)

    def _unindex_owner(self, sid: str, owner: str) -> None:
        del self._owner_of_id[sid]
        ids = self._owners[owner]
        ids.discard(sid)
        if not ids:
            del self._owners[owner]

    def _remove(self, sid: str) -> None:
        """Delete a record (a missing one is no error) and its owner index entry."""
        if self._records.pop(sid, None) is not None:
            owner = self._owner_of_id.get(sid)
            if owner is not None:
                self._unindex_owner(sid, owner)

    def _index(self, sid: str, deadline: float) -> None:
        second = int(deadline)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = []
            heapq.heappush(self._seconds, second)
        bucket.append(sid)
        self._entries += 1

    def _reindex(self) -> None:
        self._buckets: Dict[int, List[str]] = {}  # expiry second -> ids written with a deadline in it
        self._seconds: List[int] = []  # heap of the keys of _buckets
        self._entries = 0  # ids in all buckets, stale ones included
        for sid, (_, deadline) in self._records.items():
            self._index(sid, deadline)

    def _take(self, second: int, limit: Optional[int]) -> Iterator[str]:
        """Pop up to ``limit`` entries from the bucket of ``second`` (the earliest), yielding the ids whose
        current deadline is in that second; drop the bucket once empty."""
        bucket, records, taken = self._buckets[second], self._records, 0
        while bucket and (limit is None or taken < limit):
            sid = bucket.pop()
            taken += 1
            self._entries -= 1
            entry = records.get(sid)
            if entry is not None and int(entry[1]) == second:
                yield sid
        if not bucket:
            del self._buckets[second]
            heapq.heappop(self._seconds)

    def _prune(self, now: float, limit: Optional[int]) -> int:
        """Remove the records of the seconds that have wholly passed, earliest first, examining at most
        ``limit`` index entries; the number removed."""
        removed = 0
        while self._seconds and self._seconds[0] + 1 <= now:
            before = self._entries
            for sid in self._take(self._seconds[0], limit):
                self._remove(sid)
                removed += 1
            if limit is not None:
                limit -= before - self._entries
                if limit <= 0:
                    break
        return removed

    def _drop_expired_of_this_second(self, now: float) -> int:
        """Remove the records that expired earlier in the second under way (its bucket stays indexed)."""
        removed = 0
        for sid in self._buckets.get(int(now), ()):
            entry = self._records.get(sid)
            if entry is not None and entry[1] <= now:
                self._remove(sid)
                removed += 1
        return removed

    def _evict_earliest(self) -> bool:
        """Remove one live record of the earliest expiry second; False if there is none."""
        while self._seconds:
            for sid in self._take(self._seconds[0], None):
                self._remove(sid)
                return True
        return False


def _deadline(expires: Optional[float], now: float, default_ttl: float) -> float:
    """When a store drops a record written at ``now``: at its ``expires``, or ``default_ttl`` seconds later
    when it has none (a browser-session cookie)."""
    return now + default_ttl if expires is None else float(expires)


def _ttl_seconds(expires: Optional[float], now: float, default_ttl: float) -> int:
    """connect-redis 9's time-to-live for a record: whole seconds until ``expires``, rounded up (its
    ``Math.ceil``), or ``default_ttl`` when there is no expiry. Zero or less means already expired."""
    return math.ceil(default_ttl if expires is None else float(expires) - now)


def _text(value: Union[str, bytes]) -> str:
    """A value from a client that may or may not decode responses. Invalid UTF-8 is replaced as Node's
    ``Buffer#toString`` does, so both sides see the same (then corrupt, so missing) record."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


#: RedisStore's owner index, in Lua so that it runs in the same step as the record's write: if the record
#: ``record_key`` is there (and ``ttl`` positive), add ``sid`` to the owner's set ``set_key`` and give the set
#: at least the record's ttl, so it lives as long as its longest-lived member.
_INDEX_OWNER_LUA = r"""
local function index_owner(set_key, record_key, sid, ttl)
  if tonumber(ttl) <= 0 or redis.call('EXISTS', record_key) == 0 then return end
  redis.call('SADD', set_key, sid)
  if redis.call('TTL', set_key) < tonumber(ttl) then redis.call('EXPIRE', set_key, ttl) end
end
"""
#: KEYS: the owner's set, the record; ARGV: the id, the ttl (after a SET or EXPIRE of the record, in MULTI).
_INDEX_OWNER = _INDEX_OWNER_LUA + "index_owner(KEYS[1], KEYS[2], ARGV[1], ARGV[2])\n"

#: ``_Merge``'s first check, run inside Redis: if the stored value is a record whose text after its cookie
#: object is ARGV[1] (``_cookie_end``'s rules: the first ``}`` ends a cookie object with no ``{``, no
#: backslash and paired quotes), write ARGV[2] with ``EX`` ARGV[3] (``DEL`` for a ttl of zero or less) and
#: answer 1; a missing or empty value answers 0; anything else 2 (then ``WATCH``/``MULTI`` merges). With
#: KEYS[2] (the owner's set of the record ARGV[2]) and ARGV[4] (the id), the owner index is kept too.
_SET_IF_UNCHANGED = _INDEX_OWNER_LUA + r"""
local value = redis.call('GET', KEYS[1])
if not value or value == '' then return 0 end
local tail = ARGV[1]
local head_len = #value - #tail
if head_len < 12 or string.sub(value, head_len + 1) ~= tail then return 2 end
local head = string.sub(value, 1, head_len)
if string.sub(head, 1, 11) ~= '{"cookie":{' or string.find(head, '}', 12, true) ~= head_len
   or string.find(head, '{', 12, true) or string.find(head, '\\', 1, true)
   or select(2, string.gsub(head, '"', '')) % 2 == 1 then return 2 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  if KEYS[2] then index_owner(KEYS[2], KEYS[1], ARGV[4], ARGV[3]) end
else
  redis.call('DEL', KEYS[1])
end
return 1
"""


def _is_watch_error(exc: Exception) -> bool:
    """Whether a client's exception says a watched key changed (redis-py's and valkey's ``WatchError``),
    told by class name, as this module imports no client library."""
    return any(cls.__name__ == "WatchError" for cls in type(exc).__mro__)


@contextlib.contextmanager
def _store_errors(backend: str, action: str) -> Iterator[None]:
    """Turn any exception of a store's backend into a StoreError naming only the backend, the action and
    the error type: backend messages may quote keys, hence session ids. The original is ``.original``."""
    try:
        yield
    except SessionError:  # the store's own, already saying what failed
        raise
    except Exception as exc:
        raise _store_error(f"{backend} session store: cannot {action}", exc) from None


class SQLiteStore(Store):
    """Sessions in an SQLite file: the persistent store for one machine, shared by its processes.

    Several threads and processes may use one file at once (gunicorn workers, a restart while the old
    process drains): the database runs in WAL mode, so readers never wait for the writer, with
    ``synchronous=NORMAL`` (a commit survives a crash of the process, and the last ones may be lost to a
    power cut, never corrupting the file). Writers wait up to ``timeout`` seconds for each other. Each
    thread has its own connection, and a process forked after the store was created (gunicorn
    ``--preload``) opens its own too. Keep the file on a local disk: WAL needs shared memory, which network
    file systems do not provide.

    Every record expires: at its own ``expires``, or ``default_ttl`` seconds after its last write or touch
    when it has none. ``get`` never returns an expired row. Each write first deletes up to ``PRUNE_BATCH``
    expired rows, earliest first, through the index on ``expires_at``, so its cost follows the number
    expired, not the number stored, and no background thread is needed; ``prune()`` deletes them all.

    The schema (version 2, kept in ``PRAGMA user_version``; give the store a database file of its own)::

        CREATE TABLE sessions (
            id         TEXT PRIMARY KEY,  -- the session id
            record     TEXT NOT NULL,     -- the record's JSON text, as express-session stores it
            expires_at REAL NOT NULL,     -- seconds since the epoch (UTC) when the record dies
            owner      TEXT               -- the record's OWNER_KEY (Session.owner), or NULL
        );
        CREATE INDEX sessions_expires_at ON sessions (expires_at);
        CREATE INDEX sessions_owner ON sessions (owner) WHERE owner IS NOT NULL;

    A file of version 1 (no ``owner`` column) is upgraded in place when the store opens it, in one
    transaction: the column is added and filled from each record, and the index created.

    Writes are transactions (``BEGIN IMMEDIATE``): ``update`` reads the row and writes it back in one,
    so no other thread or process writes between the two.
    """

    blocking = True
    SCHEMA_VERSION = 2
    #: Expired rows deleted per write, so that one request never pays for a mass expiry.
    PRUNE_BATCH = 64

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        table: str = "sessions",
        default_ttl: Seconds = 86400,
        clock: Callable[[], float] = time.time,
        timeout: Seconds = 5.0,
    ) -> None:
        if sqlite3.sqlite_version_info < (3, 24, 0):
            raise ConfigurationError(f"SQLiteStore needs SQLite 3.24 or later (for UPSERT): {sqlite3.sqlite_version}")
        path = os.fspath(path)
        if not isinstance(path, str) or path in ("", ":memory:"):
            raise ConfigurationError("path must name a database file (for a store in memory, use MemoryStore)")
        if not isinstance(table, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", table):
            raise ConfigurationError(f"table must be a plain SQL identifier: {_shown(table)}")
        self.path = os.path.abspath(path)  # threads open their connections later, maybe after a chdir
        self.table = table
        self.default_ttl = _default_ttl(default_ttl)
        self.timeout = _seconds(timeout, "timeout")
        if self.timeout is None:
            raise ConfigurationError("timeout must be a number of seconds: how long a writer waits for another")
        self.clock = clock
        self._local = threading.local()
        self._forked_away: List[sqlite3.Connection] = []
        self._sql = self._statements(f'"{table}"')
        self._create_schema()

    def get(self, sid: str) -> Optional[Tuple[str, float]]:
        """``(record, expires_at)`` for a live row, else None."""
        with _store_errors("SQLite", "load"):
            row = self._connection().execute(self._sql["get"], (sid, self.clock())).fetchone()
        return None if row is None else (row[0], row[1])

    def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        """Insert or update the row (an UPSERT: half the cost of a REPLACE, which deletes and inserts); a
        record already expired is deleted instead."""
        now = self.clock()
        deadline = _deadline(expires, now, self.default_ttl)
        with _store_errors("SQLite", "save"), self._transaction(now) as db:
            if deadline > now:
                db.execute(self._sql["put"], (sid, record, deadline, _owner_of(record)))
            else:
                db.execute(self._sql["destroy"], (sid,))

    def update(self, sid: str, change: Callable[[str], str], expires: Optional[float]) -> bool:
        """SELECT the live row, then UPDATE it with ``change``'s text, in one ``BEGIN IMMEDIATE``
        transaction: the write lock is held from the read on, so other threads and processes wait (up to
        ``timeout``) instead of writing in between. A missing or expired row stays missing (False)."""
        now = self.clock()
        deadline = _deadline(expires, now, self.default_ttl)
        with _store_errors("SQLite", "save"), self._transaction(now) as db:
            row = db.execute(self._sql["get"], (sid, now)).fetchone()
            if row is None:
                return False
            if deadline > now:
                record = change(row[0])
                db.execute(self._sql["update"], (record, deadline, _owner_of(record), sid))
            else:
                db.execute(self._sql["destroy"], (sid,))
            return True

    def touch(self, sid: str, record: str, expires: Optional[float]) -> bool:
        """One UPDATE of a live row: its expiry, and ``record``'s cookie object over the stored data. A
        missing or expired row stays missing (False); data written meanwhile by another request is kept."""
        now = self.clock()
        deadline = _deadline(expires, now, self.default_ttl)
        with _store_errors("SQLite", "touch"), self._transaction(now) as db:
            return db.execute(self._sql["touch"], (record, deadline, sid, now)).rowcount > 0

    def destroy(self, sid: str) -> None:
        """Delete the row; a missing one is not an error."""
        with _store_errors("SQLite", "destroy"), self._transaction(self.clock()) as db:
            db.execute(self._sql["destroy"], (sid,))

    def clear(self) -> None:
        with _store_errors("SQLite", "clear"):
            self._connection().execute(self._sql["clear"])

    def prune(self) -> int:
        """Delete every expired row now; returns how many were deleted."""
        with _store_errors("SQLite", "prune"):
            return self._connection().execute(self._sql["prune"], (self.clock(),)).rowcount

    def __len__(self) -> int:
        with _store_errors("SQLite", "count"):
            return self._connection().execute(self._sql["count"], (self.clock(),)).fetchone()[0]

    def ids(self) -> List[str]:
        with _store_errors("SQLite", "list"):
            return [row[0] for row in self._connection().execute(self._sql["ids"], (self.clock(),))]

    def records_of(self, owner: str) -> Dict[str, Tuple[str, float]]:
        """``{id: (record, expires_at)}`` of the live rows of ``owner``, through the index on ``owner``."""
        with _store_errors("SQLite", "list"):
            rows = self._connection().execute(self._sql["records_of"], (owner, self.clock()))
            return {sid: (record, expires_at) for sid, record, expires_at in rows}

    @staticmethod
    def _statements(table: str) -> Dict[str, str]:
        live = "expires_at > ?"
        return {
            "get": f"SELECT record, expires_at FROM {table} WHERE id = ? AND {live}",
            "put": f"INSERT INTO {table} (id, record, expires_at, owner) VALUES (?, ?, ?, ?) ON CONFLICT (id)"
                   " DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at,"
                   " owner = excluded.owner",
            "update": f"UPDATE {table} SET record = ?, expires_at = ?, owner = ? WHERE id = ?",
            "touch": f"UPDATE {table} SET record = sessions_with_cookie_of(record, ?), expires_at = ?"
                     f" WHERE id = ? AND {live}",
            "destroy": f"DELETE FROM {table} WHERE id = ?",
            "clear": f"DELETE FROM {table}",
            "prune": f"DELETE FROM {table} WHERE expires_at <= ?",
            "prune_batch": f"DELETE FROM {table} WHERE rowid IN"
                           f" (SELECT rowid FROM {table} WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
            "count": f"SELECT count(*) FROM {table} WHERE {live}",
            "ids": f"SELECT id FROM {table} WHERE {live}",
            "records_of": f"SELECT id, record, expires_at FROM {table} WHERE owner = ? AND {live}",
        }

    def _create_schema(self) -> None:
        """Open the file, switch it to WAL and create or check the schema; any failure is a
        ConfigurationError now rather than a failed request later. The connection is closed again, so a
        process that forks after this carries no open connection into its children."""
        db = None
        try:
            db = self._connect()
            self._switch_to_wal(db)
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > self.SCHEMA_VERSION:
                raise ConfigurationError(
                    f"{self.path!r} has session schema version {version}; this sessions.py knows up to "
                    f"{self.SCHEMA_VERSION}"
                )
            table = f'"{self.table}"'
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                       "(id TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at REAL NOT NULL, owner TEXT)")
            db.execute(f'CREATE INDEX IF NOT EXISTS "{self.table}_expires_at" ON {table} (expires_at)')
            self._add_owner_column(db)
            db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"cannot use {self.path!r} as an SQLite session database ({type(exc).__name__}: {exc})"
            ) from exc
        finally:
            if db is not None:
                db.close()

    def _add_owner_column(self, db: sqlite3.Connection) -> None:
        """Schema version 2: the ``owner`` column and its index. A table of version 1 gets the column, filled
        from its records (inside the caller's transaction). Checked per table, as tables share a file's
        ``user_version``."""
        table = f'"{self.table}"'
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        if "owner" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN owner TEXT")
            db.execute(f"UPDATE {table} SET owner = sessions_owner_of(record)")
        db.execute(f'CREATE INDEX IF NOT EXISTS "{self.table}_owner" ON {table} (owner) WHERE owner IS NOT NULL')

    def _switch_to_wal(self, db: sqlite3.Connection) -> None:
        """``PRAGMA journal_mode = WAL``, retried for up to ``timeout`` seconds: SQLite answers "database is
        locked" at once, without its busy handler, while another process switches a new file to WAL (two
        workers starting together)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are explicit), with the per-connection
        settings and the function ``touch`` uses to keep the stored data."""
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.execute("PRAGMA synchronous = NORMAL")
        db.create_function("sessions_with_cookie_of", 2, _with_cookie_of, deterministic=True)
        db.create_function("sessions_owner_of", 1, _owner_of, deterministic=True)
        return db

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use and again in a forked child: a connection must
        not be used across ``fork``, nor closed there, so the inherited one is merely kept unused."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            if getattr(local, "db", None) is not None:
                self._forked_away.append(local.db)
            local.db, local.pid = self._connect(), os.getpid()
        return local.db

    @contextlib.contextmanager
    def _transaction(self, now: float) -> Iterator[sqlite3.Connection]:
        """A write transaction that first prunes a batch of rows expired at ``now``; committed if the block
        succeeds, rolled back otherwise."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(self._sql["prune_batch"], (now, self.PRUNE_BATCH))
            yield db
            db.execute("COMMIT")
        except BaseException:
            self._abandon(db)
            raise

    def _abandon(self, db: sqlite3.Connection) -> None:
        """Roll back what a failed write left open (a COMMIT can fail too: busy, disk full). A connection
        that cannot even roll back is closed and forgotten, and this thread opens a new one next time:
        left inside its transaction it would hold the write lock for good."""
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            self._local.db = self._local.pid = None
            with contextlib.suppress(sqlite3.Error):
                db.close()


#: One step of a Redis store call, as ``_RedisSessions``' steps yield it; ``RedisStore`` performs it on a
#: redis-py client, ``AsyncRedisStore`` awaits it on a ``redis.asyncio`` one. Its answer is sent back:
#:
#: - ``("call", name, args, kwargs)``: ``client.<name>(*args, **kwargs)``'s answer;
#: - ``("batch", transaction, commands)``: the commands (each ``(name, args, kwargs)``) in one pipeline,
#:   ``MULTI``/``EXEC`` when ``transaction``: their answers;
#: - ``("script", keys, args)``: ``_SET_IF_UNCHANGED``'s answer;
#: - ``("watch", key)``: ``WATCH key`` on a pipeline of its own, then ``GET key`` at once: the value;
#: - ``("exec", commands)``: ``MULTI``, the commands, ``EXEC`` on that watched pipeline: True, or False when
#:   the watched key changed meanwhile (the pipeline is reset either way, and at the end of the call);
#: - ``("pause", seconds)``: a sleep; ``("scan", pattern)``: the set of keys ``SCAN`` finds.
_RedisStep = Tuple[Any, ...]
_RedisCommand = Tuple[str, Tuple[Any, ...], Dict[str, Any]]


class _RedisSessions:
    """What RedisStore and AsyncRedisStore share: the options, connect-redis's format and commands, the owner
    index, and each store call as steps (generators of ``_RedisStep``); the classes only perform the steps."""

    #: Tries of an ``update`` whose key other clients keep writing before it gives up with a StoreError,
    #: and the longest random pause (seconds) between two tries: a pause spreads the writers apart.
    UPDATE_ATTEMPTS = 50
    UPDATE_BACKOFF = 0.05

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "sess:",
        default_ttl: Seconds = 86400,
        scan_count: int = 100,
        clock: Callable[[], float] = time.time,
        owner_index: Optional[bool] = None,
    ) -> None:
        if not callable(getattr(client, "pipeline", None)):
            raise ConfigurationError("client must be a redis-py-compatible client (it has no pipeline())")
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix must be a str, not {type(prefix).__name__}")
        if isinstance(scan_count, bool) or not isinstance(scan_count, int) or scan_count < 1:
            raise ConfigurationError(f"scan_count must be a positive int: {_shown(scan_count)}")
        self.client = client
        self.prefix = prefix
        self.default_ttl = _default_ttl(default_ttl)
        self.scan_count = scan_count
        self.clock = clock
        cluster = "Cluster" in type(client).__name__
        if owner_index and cluster:
            raise ConfigurationError("owner_index=True needs a single Redis (or Sentinel): on a Cluster a record "
                                     "and its owner's set cannot be written in one step")
        self.owner_index = not cluster if owner_index is None else bool(owner_index)
        register = getattr(client, "register_script", None)  # a client without scripts merges by WATCH only
        self._set_if_unchanged = register(_SET_IF_UNCHANGED) if callable(register) else None

    def _get_steps(self, sid: str) -> Generator[_RedisStep, Any, Any]:
        """GET and PTTL in one pipeline: one round trip, no MULTI (which not every cluster client allows); a
        write landing between the two only pairs the value with a newer TTL."""
        key = self.prefix + sid
        value, pttl_ms = yield "batch", False, [("get", (key,), {}), ("pttl", (key,), {})]
        if not value or pttl_ms == -2:  # -2: the key vanished between GET and PTTL
            return None
        return _text(value), None if pttl_ms < 0 else self.clock() + pttl_ms / 1000

    def _set_steps(self, sid: str, record: str, expires: Optional[float]) -> Generator[_RedisStep, Any, Any]:
        key, ttl = self.prefix + sid, _ttl_seconds(expires, self.clock(), self.default_ttl)
        owner = self._indexed_owner(record)
        if ttl <= 0:
            yield "call", "delete", (key,), {}
        elif owner is None:
            yield "call", "set", (key, record), {"ex": ttl}
        else:
            yield "batch", True, [("set", (key, record), {"ex": ttl}), self._index_command(owner, sid, ttl)]

    def _update_steps(self, sid: str, change: Callable[[str], str], expires: Optional[float]
                      ) -> Generator[_RedisStep, Any, Any]:
        key = self.prefix + sid
        if isinstance(change, _Merge) and self._set_if_unchanged is not None:
            ttl = _ttl_seconds(expires, self.clock(), self.default_ttl)
            owner = self._indexed_owner(change.record)
            keys, args = [key], [change.unchanged, change.record, ttl]
            if owner is not None:
                keys.append(self._owner_key(owner))
                args.append(sid)
            done = yield "script", keys, args
            if done != 2:
                return done == 1
        for attempt in range(self.UPDATE_ATTEMPTS):
            if attempt:
                yield "pause", random.uniform(0, min(self.UPDATE_BACKOFF, 0.001 * 2**attempt))
            value = yield "watch", key
            if not value:
                return False
            record = change(_text(value))
            ttl = _ttl_seconds(expires, self.clock(), self.default_ttl)
            commands: List[_RedisCommand] = [("delete", (key,), {})]
            if ttl > 0:
                commands = [("set", (key, record), {"ex": ttl})]
                owner = self._indexed_owner(record)
                if owner is not None:
                    commands.append(self._index_command(owner, sid, ttl))
            if (yield "exec", commands):
                return True
        raise StoreError(f"Redis session store: cannot save (the record kept changing: {self.UPDATE_ATTEMPTS} tries)")

    def _touch_steps(self, sid: str, record: str, expires: Optional[float]) -> Generator[_RedisStep, Any, Any]:
        key, ttl = self.prefix + sid, _ttl_seconds(expires, self.clock(), self.default_ttl)
        owner = self._indexed_owner(record)
        if owner is None:
            return bool((yield "call", "expire", (key, ttl), {}))
        answers = yield "batch", True, [("expire", (key, ttl), {}), self._index_command(owner, sid, ttl)]
        return bool(answers[0])

    def _destroy_steps(self, sid: str) -> Generator[_RedisStep, Any, Any]:
        yield "call", "delete", (self.prefix + sid,), {}

    def _clear_steps(self) -> Generator[_RedisStep, Any, Any]:
        keys = list((yield "scan", self._pattern()))  # the owner index's sets too
        for start in range(0, len(keys), self.scan_count):
            yield "call", "delete", tuple(keys[start : start + self.scan_count]), {}

    def _ids_steps(self) -> Generator[_RedisStep, Any, Any]:
        sets = self.prefix + "owner:"
        keys = [_text(key) for key in (yield "scan", self._pattern())]
        return [key[len(self.prefix) :] for key in keys if not key.startswith(sets)]

    def _count_steps(self) -> Generator[_RedisStep, Any, Any]:
        return len((yield from self._ids_steps()))

    def _records_of_steps(self, owner: str) -> Generator[_RedisStep, Any, Any]:
        """``{id: (record, expires_at)}`` of the live records in the owner's set (``SMEMBERS``, then GET and
        PTTL of each in one pipeline); ids whose record is gone or has another owner now leave the set."""
        if not self.owner_index:
            raise ConfigurationError("this RedisStore has no owner index (owner_index=False, or a Cluster client)")
        set_key = self._owner_key(owner)
        ids = [_text(member) for member in (yield "call", "smembers", (set_key,), {})]
        commands = [(name, (self.prefix + sid,), {}) for sid in ids for name in ("get", "pttl")]
        answers = (yield "batch", False, commands) if ids else []
        now, found, stale = self.clock(), {}, []
        for sid, value, pttl_ms in zip(ids, answers[::2], answers[1::2]):
            record = _text(value) if value else None
            if record is None or pttl_ms == -2 or _owner_of(record) != owner:
                stale.append(sid)
            else:
                found[sid] = (record, None if pttl_ms < 0 else now + pttl_ms / 1000)
        if stale:
            yield "call", "srem", (set_key, *stale), {}
        return found

    def _owner_key(self, owner: str) -> str:
        return self.prefix + "owner:" + owner

    def _indexed_owner(self, record: str) -> Optional[str]:
        """The owner under which ``record`` is indexed, or None (none, or no index)."""
        return _owner_of(record) if self.owner_index else None

    def _index_command(self, owner: str, sid: str, ttl: int) -> _RedisCommand:
        """``_INDEX_OWNER``, for a MULTI that has just written or extended the record of ``sid``."""
        return "eval", (_INDEX_OWNER, 2, self._owner_key(owner), self.prefix + sid, sid, ttl), {}

    def _pattern(self) -> str:
        return re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "*"


def _queued(pipe: Any, commands: List[_RedisCommand]) -> Any:
    """``pipe`` with ``commands`` queued (queueing never waits, with either client)."""
    for name, args, kwargs in commands:
        getattr(pipe, name)(*args, **kwargs)
    return pipe


class RedisStore(_RedisSessions, Store):
    """Sessions in Redis, in connect-redis 9's exact format, so Node and Python apps share them.

    ``client`` is any redis-py-compatible object (``redis.Redis``, ``redis.RedisCluster``, valkey's), with or
    without ``decode_responses``; this module never imports a client library. Give the client short
    timeouts (``socket_timeout``, ``socket_connect_timeout``): a request waits for it.

    The format is connect-redis's: key ``prefix + id``, value the record's JSON text, written with
    ``SET key value EX ttl`` where ttl is the whole seconds until ``expires``, rounded up, or
    ``default_ttl`` without one; a ttl of zero or less deletes the key instead. connect-redis takes the
    same ttl from the record's ``cookie.expires``, which is ``expires`` except for a browser-session cookie
    under ``absolute_timeout``: that record ends at the timeout here, a thing connect-redis does not know. ``touch`` is a
    lone ``EXPIRE`` (atomic; it never creates a key and never rewrites the data), ``destroy`` is ``DEL``,
    and ``ids()``, ``len()`` and ``clear()`` walk the prefix with ``SCAN``, never ``KEYS``.

    ``update`` of a loaded session first runs a script that writes its record at once if no other request
    changed the stored data since it was loaded (one round trip, as ``set``). Otherwise, and for other
    changes, it is optimistic: ``WATCH key``, ``GET``, then ``MULTI`` + ``SET key value EX ttl`` (the same
    value bytes and ttl as ``set``) + ``EXEC``. If another client wrote the key in between, Redis refuses
    the ``EXEC`` and the update starts again with the newer value after a short random pause (growing,
    at most ``UPDATE_BACKOFF`` seconds), up to ``UPDATE_ATTEMPTS`` times (then a ``StoreError``: a clean
    500). A cluster client must support ``WATCH`` in its pipelines.

    Redis's TTL is the authority on expiry: connect-redis's own touch leaves the stored ``cookie.expires``
    behind, so ``get`` reads the TTL along with the value, in one round trip, and returns both. Any error of
    the client becomes a ``StoreError``, so the request fails cleanly instead of starting an empty session.

    The owner index (``records_of``): a set ``prefix + "owner:" + owner`` holds the ids of the owner's
    records. Every write of a record with an owner (``set``, ``update``, ``touch``) adds its id in the same
    step (the script or ``MULTI``) and gives the set the record's ttl if that is longer, so the set lives as
    long as its longest-lived member and expires with it. Entries of records that expired, were destroyed
    or changed owner are removed when ``records_of`` reads the set. A record that Node wrote joins the set
    at its first write from Python. ``ids()`` and ``len()`` leave the sets out, ``clear()`` deletes them too;
    connect-redis's own ``length()``, ``ids()`` and ``all()`` scan the whole prefix and see them. On Redis
    Cluster a record and its owner's set are in different slots (the record's key is connect-redis's, with
    no hash tag), so one step cannot write both: with a cluster client ``owner_index`` defaults to False (no
    index: ``records_of`` raises), and True is refused.
    """

    blocking = True

    def get(self, sid: str) -> Optional[Tuple[str, Optional[float]]]:
        """``(record, expires_at)`` for a live key, else None. ``expires_at`` is when Redis will drop the key
        (its ``PTTL`` from now, per ``clock``), or None if the key has no TTL. Empty values are missing, as
        in connect-redis."""
        return self._perform("load", self._get_steps(sid))

    def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        """``SET key record EX ttl``; a record already expired is deleted instead."""
        self._perform("save", self._set_steps(sid, record, expires))

    def update(self, sid: str, change: Callable[[str], str], expires: Optional[float]) -> bool:
        """``WATCH``, ``GET``, ``MULTI``, ``SET ... EX ttl`` (or ``DEL`` for a ttl of zero or less),
        ``EXEC``; retried with the newer value when another client wrote the key meanwhile. A missing key
        (or an empty value, missing to connect-redis too) stays missing: False."""
        return self._perform("save", self._update_steps(sid, change, expires))

    def touch(self, sid: str, record: str, expires: Optional[float]) -> bool:
        """``EXPIRE key ttl`` only, as connect-redis does: the stored record (data and cookie) is left as it
        is, a missing key stays missing (False: EXPIRE answers 0), and a ttl of zero or less deletes the key.
        A record with an owner is also indexed (in the same ``MULTI``): a record Node wrote joins the index."""
        return self._perform("touch", self._touch_steps(sid, record, expires))

    def destroy(self, sid: str) -> None:
        """``DEL key``; a missing key is not an error."""
        self._perform("destroy", self._destroy_steps(sid))

    def clear(self) -> None:
        """Delete every key under ``prefix`` (found with SCAN, deleted a batch at a time)."""
        self._perform("clear", self._clear_steps())

    def __len__(self) -> int:
        return self._perform("count", self._count_steps())

    def ids(self) -> List[str]:
        """The ids under ``prefix``, found with SCAN (each once, in no particular order)."""
        return self._perform("list", self._ids_steps())

    def records_of(self, owner: str) -> Dict[str, Tuple[str, Optional[float]]]:
        return self._perform("list", self._records_of_steps(owner))

    def _perform(self, action: str, steps: Generator[_RedisStep, Any, Any]) -> Any:
        """Perform ``steps`` on the client (``_RedisStep`` says how); any error of the client is a StoreError."""
        client, watched = self.client, None
        with _store_errors("Redis", action):
            try:
                step = next(steps)
                while True:
                    kind = step[0]
                    if kind == "call":
                        answer = getattr(client, step[1])(*step[2], **step[3])
                    elif kind == "batch":
                        answer = _queued(client.pipeline(transaction=step[1]), step[2]).execute()
                    elif kind == "script":
                        answer = self._set_if_unchanged(keys=step[1], args=step[2])
                    elif kind == "watch":
                        watched = client.pipeline(transaction=True)
                        watched.watch(step[1])
                        answer = watched.get(step[1])  # after WATCH the pipeline runs commands at once
                    elif kind == "exec":
                        watched.multi()
                        try:
                            _queued(watched, step[1]).execute()
                            answer = True
                        except Exception as exc:
                            if not _is_watch_error(exc):
                                raise
                            answer = False  # the key changed after GET: read it again
                        watched.reset()
                        watched = None
                    elif kind == "pause":
                        answer = time.sleep(step[1])
                    else:
                        answer = set(client.scan_iter(match=step[1], count=self.scan_count))
                    step = steps.send(answer)
            except StopIteration as done:
                return done.value
            finally:
                if watched is not None:
                    watched.reset()


class AsyncRedisStore(_RedisSessions, AsyncStore):
    """RedisStore for async code: the same format, commands, scripts, merge and owner index (see
    RedisStore), awaited on a ``redis.asyncio`` client (``redis.asyncio.Redis``, ``.RedisCluster``,
    ``.Sentinel``'s ``master_for``), which this module never imports. A call cancelled while it waits
    leaves the record as it was or as written: every write is one command, script or ``MULTI``/``EXEC``.
    ``count()`` is the async ``len``.
    """

    async def get(self, sid: str) -> Optional[Tuple[str, Optional[float]]]:
        return await self._perform("load", self._get_steps(sid))

    async def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        await self._perform("save", self._set_steps(sid, record, expires))

    async def update(self, sid: str, change: Callable[[str], str], expires: Optional[float]) -> bool:
        return await self._perform("save", self._update_steps(sid, change, expires))

    async def touch(self, sid: str, record: str, expires: Optional[float]) -> bool:
        return await self._perform("touch", self._touch_steps(sid, record, expires))

    async def destroy(self, sid: str) -> None:
        await self._perform("destroy", self._destroy_steps(sid))

    async def clear(self) -> None:
        await self._perform("clear", self._clear_steps())

    async def count(self) -> int:
        return await self._perform("count", self._count_steps())

    async def ids(self) -> List[str]:
        return await self._perform("list", self._ids_steps())

    async def records_of(self, owner: str) -> Dict[str, Tuple[str, Optional[float]]]:
        return await self._perform("list", self._records_of_steps(owner))

    async def _perform(self, action: str, steps: Generator[_RedisStep, Any, Any]) -> Any:
        """RedisStore's ``_perform``, each step awaited."""
        import asyncio  # here, not at the top: see SessionManager._arun

        client, watched = self.client, None
        with _store_errors("Redis", action):
            try:
                step = next(steps)
                while True:
                    kind = step[0]
                    if kind == "call":
                        answer = await getattr(client, step[1])(*step[2], **step[3])
                    elif kind == "batch":
                        answer = await _queued(client.pipeline(transaction=step[1]), step[2]).execute()
                    elif kind == "script":
                        answer = await self._set_if_unchanged(keys=step[1], args=step[2])
                    elif kind == "watch":
                        watched = client.pipeline(transaction=True)
                        await watched.watch(step[1])
                        answer = await watched.get(step[1])
                    elif kind == "exec":
                        watched.multi()
                        try:
                            await _queued(watched, step[1]).execute()
                            answer = True
                        except Exception as exc:
                            if not _is_watch_error(exc):
                                raise
                            answer = False
                        await watched.reset()
                        watched = None
                    elif kind == "pause":
                        answer = await asyncio.sleep(step[1])
                    else:
                        answer = {key async for key in client.scan_iter(match=step[1], count=self.scan_count)}
                    step = steps.send(answer)
            except StopIteration as done:
                return done.value
            finally:
                if watched is not None:
                    await watched.reset()


def _quoted_identifier(name: Any, option: str) -> str:
    """``name`` as connect-pg-simple quotes a table or schema name: in double quotes, any ``"`` doubled."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigurationError(f"{option} must be a non-empty str without NUL characters: {_shown(name)}")
    return '"' + name.replace('"', '""') + '"'


def _connection_lost(conn: Any, exc: Exception) -> bool:
    """Whether a DB-API connection died under the statement that just failed (the server restarted, the
    network dropped): psycopg 3 and psycopg2 then report ``closed`` (psycopg 3 also ``broken``); pg8000
    reports nothing, but raises its ``InterfaceError`` ("network error"), told by class name."""
    return (bool(getattr(conn, "closed", False)) or bool(getattr(conn, "broken", False))
            or type(exc).__name__ == "InterfaceError")


class _Reconnecting:
    """The connections of a PostgresStore given a ``connect`` callable: a connection is taken for one store
    call and given back after it, so each thread uses its own at any moment; idle ones are reused. A
    connection that failed is closed, never reused (the next call opens a new one), and a process forked
    after connections were opened opens its own: a connection must not be used across ``fork``, nor
    closed there (that would end the parent's), so the inherited ones are merely kept unused. Unlike
    thread-locals this leaks nothing under a server that starts a thread per request."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._idle: List[Any] = []
        self._pid = os.getpid()
        self._forked_away: List[Any] = []

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self._take()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        with self._lock:
            if self._pid == os.getpid():
                self._idle.append(conn)

    def _take(self) -> Any:
        with self._lock:
            if self._pid != os.getpid():
                self._forked_away.extend(self._idle)
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return self._connect()


class _StaleConnection(Exception):
    """A reused connection was found dead at its first statement: the call is run again on a fresh one."""


#: One step of a PostgreSQL store call: a statement's name (``_PostgresSessions._statements``) or
#: ``_TABLE_SQL`` with its SQL, its parameters, and what the step is sent back: "one" row (or None), "all"
#: rows, the "rowcount", or nothing (None).
_PostgresStep = Tuple[str, Tuple[Any, ...], Optional[str]]


class _PostgresSessions:
    """What PostgresStore and AsyncPostgresStore share: the options, connect-pg-simple's statements, and
    each store call as steps (a generator yielding ``_PostgresStep``s and sent their results), which the
    two classes perform on a DB-API connection or awaited on an asyncio one, each in one transaction."""

    #: Expired rows deleted by one write, and the seconds between two such batches of one store.
    PRUNE_BATCH = 256
    PRUNE_INTERVAL = 1.0

    def __init__(
        self, table: str, schema: Optional[str], default_ttl: Seconds, create_table: bool,
        clock: Callable[[], float],
    ) -> None:
        quoted = _quoted_identifier(table, "table")
        if schema is not None:
            quoted = _quoted_identifier(schema, "schema") + "." + quoted
        self.table = quoted
        self.default_ttl = _default_ttl(default_ttl)
        self.clock = clock
        self._sql = self._statements(quoted)
        self._create_table = create_table
        self._table_checked = False  # the first call checks the table: creates it, finds its owner column
        self._owner_column = False  # the table has the owner index's column: writes keep it, records_of reads it
        self._lock = threading.Lock()
        self._pruned_at: Optional[float] = None  # when (per clock) a write last deleted a batch not full

    # Each store call, as steps: the public methods of the two classes run these.
    def _get_steps(self, sid: str) -> Generator[_PostgresStep, Any, Any]:
        row = yield "get", (sid, self.clock()), "one"
        return None if row is None else (row[0], row[1])

    def _set_steps(self, sid: str, record: str, expires: Optional[float]) -> Generator[_PostgresStep, Any, Any]:
        now = self.clock()
        expire = self._expire(expires, now)
        if expire > now:
            yield from self._write_steps("put", record, expire, sid)
        else:
            yield "destroy", (sid,), None

    def _update_steps(self, sid: str, change: Callable[[str], str], expires: Optional[float]
                      ) -> Generator[_PostgresStep, Any, Any]:
        now = self.clock()
        expire = self._expire(expires, now)
        row = yield "lock", (sid, now), "one"
        if row is None:
            return False
        if expire > now:
            yield from self._write_steps("update", change(row[0]), expire, sid)
        else:
            yield "destroy", (sid,), None
        return True

    def _write_steps(self, statement: str, record: str, expire: int, sid: str) -> Generator[_PostgresStep, Any, Any]:
        """``put`` or ``update`` the row, its owner column too when the table has one (the same statement)."""
        if self._owner_column:
            yield statement + "_owner", (record, expire, _owner_of(record), sid), None
        else:
            yield statement, (record, expire, sid), None

    def _touch_steps(self, sid: str, record: str, expires: Optional[float]) -> Generator[_PostgresStep, Any, Any]:
        """connect-pg-simple's touch; with the owner column, the owner of ``record`` too (in the same
        statement), so a row Node wrote joins the index at its first request from Python."""
        now = self.clock()
        if self._owner_column:
            params: Tuple[Any, ...] = (self._expire(expires, now), _owner_of(record), sid, now)
            return (yield "touch_owner", params, "one") is not None
        return (yield "touch", (self._expire(expires, now), sid, now), "one") is not None

    def _records_of_steps(self, owner: str) -> Generator[_PostgresStep, Any, Any]:
        """The live rows whose owner column is ``owner`` (through its index) and whose record still says so
        (Node rewrites ``sess`` without the column)."""
        if not self._owner_column:
            raise ConfigurationError(
                f"this {type(self).__name__}'s table has no owner column: create_table=True adds it (the column "
                f"{_OWNER_COLUMN!r} and its index), or run the two statements of the README's PostgresStore section"
            )
        rows = yield "of_owner", (owner, self.clock()), "all"
        return {sid: (record, expires) for sid, record, expires in rows if _owner_of(record) == owner}

    def _destroy_steps(self, sid: str) -> Generator[_PostgresStep, Any, Any]:
        yield "destroy", (sid,), None

    def _clear_steps(self) -> Generator[_PostgresStep, Any, Any]:
        yield "clear", (), None

    def _prune_steps(self) -> Generator[_PostgresStep, Any, Any]:
        return (yield "prune", (math.ceil(self.clock()),), "rowcount")

    def _count_steps(self) -> Generator[_PostgresStep, Any, Any]:
        return (yield "count", (self.clock(),), "one")[0]

    def _ids_steps(self) -> Generator[_PostgresStep, Any, Any]:
        return [row[0] for row in (yield "ids", (self.clock(),), "all")]

    def _table_steps(self) -> Generator[_PostgresStep, Any, Any]:
        """With ``create_table``: connect-pg-simple's ``createTableIfMissing`` (``table.sql`` when
        ``to_regclass`` finds no table), then the owner index's column and index if they are missing (an older
        table is upgraded in place). Then, in any case, whether the table has the owner column."""
        if self._create_table:
            if (yield "exists", (self.table,), "one")[0] is None:
                for statement in self._table_sql():
                    yield _TABLE_SQL, (statement,), None
            for statement in self._owner_sql():
                yield _TABLE_SQL, (statement,), None
        self._owner_column = bool((yield "has_owner", (self.table,), "one")[0])

    def _pruned_first(self, steps: Callable[[], Generator[_PostgresStep, Any, Any]]
                      ) -> Callable[[], Generator[_PostgresStep, Any, Any]]:
        """``steps`` preceded by a batch of deletions of expired rows when one is due: ``PRUNE_INTERVAL``
        seconds (by ``clock``; at once if it went back) after the last batch, or at once after a full one.
        ``SKIP LOCKED``: writers never wait for each other's pruning."""
        now = self.clock()
        with self._lock:
            if self._pruned_at is not None and 0 <= now - self._pruned_at < self.PRUNE_INTERVAL:
                return steps
            self._pruned_at = now

        def pruning() -> Generator[_PostgresStep, Any, Any]:
            deleted = yield "prune_batch", (math.ceil(now), self.PRUNE_BATCH), "rowcount"
            if deleted >= self.PRUNE_BATCH:
                with self._lock:
                    self._pruned_at = None
            return (yield from steps())

        return pruning

    def _sql_of(self, step: _PostgresStep) -> str:
        name, params, _ = step
        return params[0] if name == _TABLE_SQL else self._sql[name]

    @staticmethod
    def _params_of(step: _PostgresStep) -> Tuple[Any, ...]:
        return () if step[0] == _TABLE_SQL else step[1]

    @staticmethod
    def _statements(table: str) -> Dict[str, str]:
        """connect-pg-simple's statements (``$n`` as ``%s``, which psycopg 3, psycopg2 and pg8000 take), plus
        ``FOR UPDATE`` for update, count, ids and a batched prune. A row is live while ``expire`` is after
        now: connect-pg-simple's ``expire >= to_timestamp(ceil(now))`` but for the instant ``expire`` itself."""
        live = "expire > to_timestamp(%s)"
        return {
            "get": f"SELECT sess::text, extract(epoch FROM expire::timestamptz)::float8 FROM {table}"
                   f" WHERE sid = %s AND {live}",
            "lock": f"SELECT sess::text FROM {table} WHERE sid = %s AND {live} FOR UPDATE",
            "put": f"INSERT INTO {table} (sess, expire, sid) VALUES (%s, to_timestamp(%s), %s)"
                   " ON CONFLICT (sid) DO UPDATE SET sess = EXCLUDED.sess, expire = EXCLUDED.expire",
            "update": f"UPDATE {table} SET sess = %s, expire = to_timestamp(%s) WHERE sid = %s",
            "touch": f"UPDATE {table} SET expire = to_timestamp(%s) WHERE sid = %s AND {live} RETURNING sid",
            "destroy": f"DELETE FROM {table} WHERE sid = %s",
            "clear": f"DELETE FROM {table}",
            "prune": f"DELETE FROM {table} WHERE expire < to_timestamp(%s)",
            "prune_batch": f"DELETE FROM {table} WHERE sid IN (SELECT sid FROM {table}"
                           " WHERE expire < to_timestamp(%s) ORDER BY expire LIMIT %s FOR UPDATE SKIP LOCKED)",
            "count": f"SELECT count(*) FROM {table} WHERE {live}",
            "ids": f"SELECT sid FROM {table} WHERE {live}",
            "exists": "SELECT to_regclass(%s::text)",
            # the owner index: one more column, which connect-pg-simple's own statements leave alone
            "put_owner": f"INSERT INTO {table} (sess, expire, {_OWNER_COLUMN}, sid) VALUES (%s, to_timestamp(%s), %s, %s)"
                         f" ON CONFLICT (sid) DO UPDATE SET sess = EXCLUDED.sess, expire = EXCLUDED.expire,"
                         f" {_OWNER_COLUMN} = EXCLUDED.{_OWNER_COLUMN}",
            "update_owner": f"UPDATE {table} SET sess = %s, expire = to_timestamp(%s), {_OWNER_COLUMN} = %s WHERE sid = %s",
            "touch_owner": f"UPDATE {table} SET expire = to_timestamp(%s), {_OWNER_COLUMN} = %s"
                           f" WHERE sid = %s AND {live} RETURNING sid",
            "of_owner": f"SELECT sid, sess::text, extract(epoch FROM expire::timestamptz)::float8 FROM {table}"
                        f" WHERE {_OWNER_COLUMN} = %s AND {live}",
            "has_owner": f"SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s::text)"
                         f" AND attname = '{_OWNER_COLUMN[1:-1]}' AND NOT attisdropped)",
        }

    def _owner_sql(self) -> List[str]:
        """The owner index's column and index, added to a table that lacks them (idempotent)."""
        return [
            f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {_OWNER_COLUMN} varchar",
            f'CREATE INDEX IF NOT EXISTS "IDX_session_owner" ON {self.table} ({_OWNER_COLUMN})',
        ]

    def _table_sql(self) -> List[str]:
        """connect-pg-simple's ``table.sql``, its ``"session"`` replaced by the quoted table (it keeps the
        constraint and index names), one statement at a time (not every driver runs several in one)."""
        table = self.table
        return [
            f'CREATE TABLE {table} ("sid" varchar NOT NULL COLLATE "default", "sess" json NOT NULL,'
            ' "expire" timestamp(6) NOT NULL) WITH (OIDS=FALSE)',
            f'ALTER TABLE {table} ADD CONSTRAINT "session_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE',
            f'CREATE INDEX "IDX_session_expire" ON {table} ("expire")',
        ]

    def _expire(self, expires: Optional[float], now: float) -> int:
        """connect-pg-simple's ``expire`` in seconds: the expiry rounded up to a whole second, or now plus
        ``default_ttl`` (rounded up) without one."""
        return math.ceil(_deadline(expires, now, self.default_ttl))


_TABLE_SQL = "table.sql"  # a step that runs one statement of connect-pg-simple's table.sql (its SQL as param)
_OWNER_COLUMN = '"owner"'  # the owner index's column: the session's OWNER_KEY, or NULL


def _postgres_result(cur: Any, fetch: Optional[str]) -> Any:
    """What a step is sent back, for the cursor of its executed statement, when fetching needs no await."""
    return cur.rowcount if fetch == "rowcount" else None


class PostgresStore(_PostgresSessions, Store):
    """Sessions in PostgreSQL, in connect-pg-simple 10's table and format, so Node and Python apps share them.

    ``connect`` is a pool with a ``connection()`` context manager (psycopg_pool's ``ConnectionPool``), or a
    zero-argument callable returning a new DB-API connection (``lambda: psycopg.connect(dsn)``,
    ``psycopg2.connect``, pg8000's ``dbapi.connect``); this module imports no driver. With a callable, the
    store opens connections as threads need them, reuses idle ones, and replaces one that failed or that a
    forked process inherited. Connections may be in autocommit mode or not: each store call is one
    explicit transaction.

    The table is connect-pg-simple's (``create_table=True`` runs its ``table.sql`` when the table is
    missing; ``schema`` and ``table`` are quoted as it quotes them)::

        CREATE TABLE "session" (
          "sid" varchar NOT NULL COLLATE "default",
          "sess" json NOT NULL,
          "expire" timestamp(6) NOT NULL
        ) WITH (OIDS=FALSE);
        ALTER TABLE "session" ADD CONSTRAINT "session_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE;
        CREATE INDEX "IDX_session_expire" ON "session" ("expire");

    ``sess`` holds the record's text byte for byte (``json``, unlike ``jsonb``, keeps its input exactly)
    and is read back as ``sess::text``, never parsed by the driver. ``expire`` is what connect-pg-simple
    writes: ``to_timestamp(n)``, where n is the record's expiry in whole seconds rounded up, or now plus
    ``default_ttl`` without one. ``expire`` is the authority on expiry: ``get`` returns it, ``touch``
    moves it alone (connect-pg-simple's ``UPDATE ... SET expire``), and expired rows are never returned.
    Times come from ``clock``, never from the database's ``now()``, as in connect-pg-simple.

    ``expire`` is a ``timestamp`` without time zone: PostgreSQL converts ``to_timestamp(n)`` to the wall
    clock of the connection's ``TimeZone`` setting when it stores it, and back when it compares. This
    store runs connect-pg-simple's statements unchanged and never sets ``TimeZone``, so Python and Node
    agree whenever they connect with the same ``TimeZone`` (the database's default, unless ``PGTZ`` or a
    connection option changes it); see the README.

    The owner index (``records_of``, ``SessionManager.sessions_of``): an ``"owner"`` column with an index,
    written by the same statement as the row (a touch fills it in for a row Node wrote). ``create_table=True``
    adds both to a table that lacks them (connect-pg-simple's own statements name their columns and leave it
    alone); without it the store uses them when the table has them, and ``records_of`` says how to add them
    when it has not.

    ``update`` is one transaction, ``SELECT ... FOR UPDATE``, ``change``, ``UPDATE``: the row stays locked
    from the read to the write, so concurrent requests of one session, in any process on any machine,
    keep each other's keys. Writes delete expired rows, ``PRUNE_BATCH`` at a time, at most every
    ``PRUNE_INTERVAL`` seconds per store (at once again while batches come back full), so no background
    thread is needed; ``prune()`` is connect-pg-simple's own ``DELETE``. Any driver error becomes a
    ``StoreError`` (a clean 500); a connection found dead at its first statement is replaced and the call
    run once more, so a restarted database is used again without a failed request where that suffices.
    """

    blocking = True

    def __init__(
        self,
        connect: Any,
        *,
        table: str = "session",
        schema: Optional[str] = None,
        default_ttl: Seconds = 86400,
        create_table: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if callable(getattr(connect, "connection", None)):
            self._connections: Any = connect
        elif callable(connect):
            self._connections = _Reconnecting(connect)
        else:
            raise ConfigurationError(
                "connect must be a pool with connection() (psycopg_pool) or a callable returning a DB-API connection"
            )
        super().__init__(table, schema, default_ttl, create_table, clock)
        self._table_lock = threading.Lock()

    def get(self, sid: str) -> Optional[Tuple[str, float]]:
        """``(record, expires_at)`` for a live row, else None; ``expires_at`` is ``expire`` in seconds."""
        return self._run("load", lambda: self._get_steps(sid), prune=False)

    def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        """connect-pg-simple's UPSERT of the row; a record already expired is deleted instead."""
        self._run("save", lambda: self._set_steps(sid, record, expires))

    def update(self, sid: str, change: Callable[[str], str], expires: Optional[float]) -> bool:
        """``SELECT sess::text ... FOR UPDATE`` of the live row, ``change``, ``UPDATE``, in one transaction:
        a concurrent writer waits for the lock, then works on this write's result. A missing or expired row
        stays missing (False)."""
        return self._run("save", lambda: self._update_steps(sid, change, expires))

    def touch(self, sid: str, record: str, expires: Optional[float]) -> bool:
        """connect-pg-simple's ``UPDATE ... SET expire`` of a live row (one statement, ``RETURNING sid``): the
        stored record is left as it is, and a missing or expired row stays missing (False)."""
        return self._run("touch", lambda: self._touch_steps(sid, record, expires))

    def records_of(self, owner: str) -> Dict[str, Tuple[str, float]]:
        """The owner index (see the class docstring): ``{id: (record, expires_at)}`` of the owner's live rows."""
        return self._run("list", lambda: self._records_of_steps(owner), prune=False)

    def destroy(self, sid: str) -> None:
        """``DELETE`` the row; a missing one is not an error."""
        self._run("destroy", lambda: self._destroy_steps(sid))

    def clear(self) -> None:
        self._run("clear", self._clear_steps, prune=False)

    def prune(self) -> int:
        """connect-pg-simple's ``DELETE`` of every expired row now; returns how many were deleted."""
        return self._run("prune", self._prune_steps, prune=False)

    def __len__(self) -> int:
        return self._run("count", self._count_steps, prune=False)

    def ids(self) -> List[str]:
        return self._run("list", self._ids_steps, prune=False)

    def _run(self, action: str, steps: Callable[[], Generator[_PostgresStep, Any, Any]], prune: bool = True) -> Any:
        """``steps()`` in one transaction (after the table check and, with ``prune`` when one is due, a batch
        of expired rows deleted), as ``_store_errors``' StoreError if it fails. A connection found dead at its
        first statement is replaced and the call run once more."""
        with _store_errors("PostgreSQL", action):
            if not self._table_checked:
                self._check_table()
            steps = self._pruned_first(steps) if prune else steps
            try:
                return self._once(steps, retry_stale=True)
            except _StaleConnection:
                return self._once(steps)

    def _check_table(self) -> None:
        """``_table_steps`` once per store, one thread at a time (concurrent CREATEs fail): create the table
        and its owner column with ``create_table``, find whether it has that column. Another process creating
        the table at the same moment fails this call only: the next one finds it."""
        with self._table_lock:
            if not self._table_checked:
                self._once(self._table_steps)
                self._table_checked = True

    def _once(self, steps: Callable[[], Generator[_PostgresStep, Any, Any]], retry_stale: bool = False) -> Any:
        """``steps()`` then COMMIT on one connection; on a failure, ROLLBACK and re-raise (the connection is
        then discarded by ``_Reconnecting``, and checked by a pool). With ``retry_stale``, a failure that
        left the connection dead before the COMMIT raises ``_StaleConnection`` instead."""
        with self._connections.connection() as conn:
            autocommit = bool(getattr(conn, "autocommit", False))
            cur = conn.cursor()
            try:
                try:
                    if autocommit:
                        cur.execute("BEGIN")
                    result = self._perform(cur, steps())
                except Exception as exc:
                    if retry_stale and _connection_lost(conn, exc):
                        raise _StaleConnection() from None
                    with contextlib.suppress(Exception):
                        self._end(conn, cur, autocommit, "ROLLBACK")
                    raise
                self._end(conn, cur, autocommit, "COMMIT")
                return result
            finally:
                with contextlib.suppress(Exception):
                    cur.close()

    def _perform(self, cur: Any, steps: Generator[_PostgresStep, Any, Any]) -> Any:
        try:
            step = next(steps)
            while True:
                cur.execute(self._sql_of(step), self._params_of(step))
                fetch = step[2]
                if fetch == "one":
                    step = steps.send(cur.fetchone())
                elif fetch == "all":
                    step = steps.send(cur.fetchall())
                else:
                    step = steps.send(_postgres_result(cur, fetch))
        except StopIteration as done:
            return done.value

    @staticmethod
    def _end(conn: Any, cur: Any, autocommit: bool, command: str) -> None:
        """COMMIT or ROLLBACK: the statement on a connection in autocommit mode (which began with an explicit
        BEGIN), else the DB-API method."""
        if autocommit:
            cur.execute(command)
        elif command == "COMMIT":
            conn.commit()
        else:
            conn.rollback()


class AsyncPostgresStore(_PostgresSessions, AsyncStore):
    """PostgresStore for async code: the same table, statements, expiry arithmetic and behaviour (see
    PostgresStore), over psycopg 3's ``AsyncConnectionPool`` (``psycopg_pool``): ``pool`` is any object with
    an async ``connection()`` context manager giving psycopg ``AsyncConnection``s. Each call is one
    transaction, awaited on the event loop; a call cancelled while it waits is rolled back by the pool (its
    connection goes back in a failed or unknown state and is discarded or reset), so a write is whole or
    absent. ``count()`` is the async ``len``.
    """

    def __init__(
        self,
        pool: Any,
        *,
        table: str = "session",
        schema: Optional[str] = None,
        default_ttl: Seconds = 86400,
        create_table: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not callable(getattr(pool, "connection", None)):
            raise ConfigurationError("pool must be an async pool with connection() (psycopg_pool.AsyncConnectionPool)")
        self._pool = pool
        super().__init__(table, schema, default_ttl, create_table, clock)
        self._table_lock: Any = None  # an asyncio.Lock, made on the loop at first use (Python 3.9 binds it)

    async def get(self, sid: str) -> Optional[Tuple[str, float]]:
        return await self._run("load", lambda: self._get_steps(sid), prune=False)

    async def set(self, sid: str, record: str, expires: Optional[float]) -> None:
        await self._run("save", lambda: self._set_steps(sid, record, expires))

    async def update(self, sid: str, change: Callable[[str], str], expires: Optional[float]) -> bool:
        return await self._run("save", lambda: self._update_steps(sid, change, expires))

    async def touch(self, sid: str, record: str, expires: Optional[float]) -> bool:
        return await self._run("touch", lambda: self._touch_steps(sid, record, expires))

    async def records_of(self, owner: str) -> Dict[str, Tuple[str, float]]:
        return await self._run("list", lambda: self._records_of_steps(owner), prune=False)

    async def destroy(self, sid: str) -> None:
        await self._run("destroy", lambda: self._destroy_steps(sid))

    async def clear(self) -> None:
        await self._run("clear", self._clear_steps, prune=False)

    async def prune(self) -> int:
        return await self._run("prune", self._prune_steps, prune=False)

    async def count(self) -> int:
        return await self._run("count", self._count_steps, prune=False)

    async def ids(self) -> List[str]:
        return await self._run("list", self._ids_steps, prune=False)

    async def _run(self, action: str, steps: Callable[[], Generator[_PostgresStep, Any, Any]],
                   prune: bool = True) -> Any:
        """As ``PostgresStore._run``: the pool checks and replaces dead connections itself."""
        with _store_errors("PostgreSQL", action):
            if not self._table_checked:
                await self._check_table()
            return await self._once(self._pruned_first(steps) if prune else steps)

    async def _check_table(self) -> None:
        """As ``PostgresStore._check_table``, one task at a time (an asyncio lock, made on the loop)."""
        if self._table_lock is None:
            import asyncio

            self._table_lock = asyncio.Lock()
        async with self._table_lock:
            if not self._table_checked:
                await self._once(self._table_steps)
                self._table_checked = True

    async def _once(self, steps: Callable[[], Generator[_PostgresStep, Any, Any]]) -> Any:
        """``steps()`` in one transaction (``conn.transaction()``: COMMIT, or ROLLBACK on any failure)."""
        async with self._pool.connection() as conn:
            async with conn.transaction():
                cur = conn.cursor()
                try:
                    return await self._perform(cur, steps())
                finally:
                    await cur.close()

    async def _perform(self, cur: Any, steps: Generator[_PostgresStep, Any, Any]) -> Any:
        try:
            step = next(steps)
            while True:
                await cur.execute(self._sql_of(step), self._params_of(step))
                fetch = step[2]
                if fetch == "one":
                    step = steps.send(await cur.fetchone())
                elif fetch == "all":
                    step = steps.send(await cur.fetchall())
                else:
                    step = steps.send(_postgres_result(cur, fetch))
        except StopIteration as done:
            return done.value


# Session ##################################################################################################


class SessionCookie:
    """The cookie of one session: its lifetime and (read-only) attributes.

    ``max_age`` is the remaining lifetime in seconds (None for a browser-session cookie) and can be set,
    e.g. for "remember me": that sets ``original_max_age`` too, and the new lifetime is stored and sent to
    the browser at the end of the request (express-session would change neither, issue #452).
    ``expires`` is an aware UTC datetime or None.
    """

    __slots__ = ("_session", "_manager", "_options", "original_max_age_ms", "expires_ms")

    def __init__(
        self,
        session: "Session",
        options: CookieOptions,
        original_max_age_ms: Optional[float],
        expires_ms: Optional[int],
    ) -> None:
        # A weak reference: a cycle would leave every request's session to the cyclic garbage collector.
        self._session = weakref.ref(session)
        self._manager = session._manager
        self._options = options
        self.original_max_age_ms = original_max_age_ms
        self.expires_ms = expires_ms

    path = property(lambda self: self._options.path)
    domain = property(lambda self: self._options.domain)
    http_only = property(lambda self: self._options.http_only)
    secure = property(lambda self: self._options.secure, doc="True, False or 'auto' (resolved per response)")
    same_site = property(lambda self: self._options.same_site)
    partitioned = property(lambda self: self._options.partitioned)
    priority = property(lambda self: self._options.priority)

    @property
    def original_max_age(self) -> Optional[float]:
        """The lifetime in seconds that every committed request restarts, or None."""
        return None if self.original_max_age_ms is None else self.original_max_age_ms / 1000

    @property
    def expires(self) -> Optional[datetime]:
        if self.expires_ms is None:
            return None
        return datetime.fromtimestamp(self.expires_ms / 1000, timezone.utc)

    @property
    def max_age(self) -> Optional[float]:
        if self.expires_ms is None:
            return None
        return (self.expires_ms - self._manager._now_ms()) / 1000

    @max_age.setter
    def max_age(self, value: Optional[Seconds]) -> None:
        seconds = _seconds(value, "max_age")
        session = self._session()
        if session is None:
            raise SessionClosedError("this cookie's session is gone (its request ended)")
        session._writable()
        self.original_max_age_ms = None if seconds is None else _ms(seconds)
        self.expires_ms = None
        session._manager._slide_expiry(session, session._manager._now_ms())
        session._cookie_changed()

    def __repr__(self) -> str:
        return f"<SessionCookie max_age={self.max_age!r} path={self.path!r} secure={self.secure!r}>"


# A session's status: whether it may still change, and if not, why (``Session._closed_reason``).
_OPEN = "open"
_OUT_OF_SCOPE = "out of cookie scope"  # the request path is outside the cookie path: no session at all
_DESTROYED = "destroyed"  # destroy() ran: only regenerate() or flush() starts a new one
_COMMITTED = "committed"  # the response started: nothing can change any more

_CLOSED = (
    "the session was committed when the response started (status and headers), so this change could not "
    "be saved; change the session before sending the response"
)
_DESTROYED_REASON = "the session was destroyed; call regenerate() or flush() to start a new one"


def _opening(read: Callable[..., Any]) -> Callable[..., Any]:
    """``Session``'s version of one of dict's reads: the session opens on first use, then dict's own runs."""
    def method(self: "Session", *args: Any) -> Any:
        if not self._accessed:
            self._use()
        return read(self, *args)

    method.__name__ = method.__qualname__ = read.__name__
    method.__doc__ = read.__doc__
    return method


class Session(Dict[str, Any]):
    """One request's view of a session: a real ``dict`` of JSON values, plus its id, cookie and lifecycle
    methods.

    Get one from ``SessionManager.open`` (or ``self.session`` / ``environ["sessions.session"]`` in the
    adapters). It is a ``dict`` subclass, so ``json.dumps(session)``, ``isinstance(session, dict)``, ``|``,
    ``|=``, ``popitem()`` (the last key), ``copy()`` (a plain dict) and every other dict method behave as on
    a dict. Values must be JSON-serialisable (checked when set, and again at commit for values changed in
    place; with the manager's ``codec``, whatever it keeps); keys are str; ``"cookie"`` is reserved by the
    record format. A refused value raises ``SerializationError`` and changes nothing (``update`` checks
    every value before it writes one). Once the response has started the session is closed: any change
    raises ``SessionClosedError`` rather than being lost silently.

    A session from the adapters opens (verifies its cookie, reads the store) on first use through any of
    its methods. Only CPython's C JSON encoder reads a dict's storage without calling a method, so
    ``json.dumps`` of a lazy session that nothing has used yet in the request sees it empty:
    ``ASGISessionMiddleware`` therefore loads a session up front whenever the request carries its cookie,
    and with the WSGI middleware use the session (or ``dict(session)``) before dumping it.

    All of a request's session state lives here; the manager changes it only through the transitions
    below (``_start``, ``_verified_by``, ``_leave_scope``, ``_cookie_changed``, ``_cookie_sending``,
    ``_mark_saved``, ``_mark_gone``, ``_reloaded``, ``_restart``, ``_stale_deleted``, ``_mark_destroyed``,
    ``_close``) and reads it through the predicates (``is_new``, ``_saved``, ``_may_be_stored``, ``_modified``,
    ``_changed_since_saved``), ``_baseline_json`` and ``_status``.
    """

    # Slots: a dict subclass's own attributes are read much faster from slots than from an instance dict,
    # and the manager reads them throughout a request. The data itself is the dict.
    __slots__ = (
        "_manager",
        "_request",
        "_status",
        "_closed_reason",
        "_new_reason",
        "_opened",
        "_accessed",
        "_id",
        "_cookie",
        "_created_ms",
        "_secure",
        "_loaded_json",
        "_synced_json",
        "_record_gone",
        "_id_changed",
        "_forced",
        "_cookie_unsaved",
        "_cookie_unsent",
        "_created_unsaved",
        "_signed",
        "_resign",
        "_stale_ids",
        "_expire_browser_cookie",
        "_stored_expires_ms",
        "_sent_expires_ms",
        "_set_cookies",
        "_owner",
        "_stored_owner",
        "__weakref__",
    )

    def __init__(
        self, manager: "SessionManager", request: Optional[Callable[[], Tuple[Any, bool, str]]] = None
    ) -> None:
        # The request's: the rest, the session's own state, starts in _start (when the session opens).
        self._manager = manager
        self._request = request  # for a lazy session: () -> (cookie header, secure, path)
        self._status = _OPEN
        self._closed_reason: Optional[str] = None  # why the session can no longer change, when not open
        self._opened = False  # the cookie was verified and the record loaded (or a new session started)
        self._accessed = False  # the application used the session this request (set by _use, which opens it)
        self._secure = False  # the request came over HTTPS
        self._stale_ids: Tuple[str, ...] = ()  # ids that regenerate() left behind, deleted at commit
        self._expire_browser_cookie = False  # flush(): unless a new cookie is sent, expire the browser's
        self._set_cookies: List[str] = []  # what commit returned (never mutated: commit hands out copies)

    # Opening is lazy: the adapters create sessions that load on first use. Every public method starts
    # with ``if not self._accessed: self._use()``, one attribute test once the session is in use.
    def _use(self) -> None:
        """The application uses the session: open it if it is not yet (may raise StoreError; a later use
        retries) and remember that it was used."""
        if not self._opened:
            self._manager._run(self._manager._open_into(self, *self._request()))
        self._accessed = True

    def _preload(self) -> None:
        """Open the session without counting it as used: an adapter reads it before the application runs
        (so that even ``json.dumps`` sees its data); unused, it costs no store write, touch or header."""
        if not self._opened:
            self._manager._run(self._manager._open_into(self, *self._request()))

    @property
    def opened(self) -> bool:
        """Whether the session was read (its cookie verified and record loaded) during this request."""
        return self._opened

    @property
    def accessed(self) -> bool:
        """Whether the application used the session during this request (read or changed it, or asked for
        its id, cookie or state). A session nobody used is committed without a store call or a header."""
        return self._accessed

    def _writable(self, allow_destroyed: bool = False) -> None:
        """Nothing, if the session may still change; otherwise SessionClosedError saying why not."""
        if not self._accessed:
            self._use()
        if self._status is not _OPEN and not (allow_destroyed and self._status is _DESTROYED):
            raise SessionClosedError(self._closed_reason)

    # The dict: reads open the session; writes check that it may change and what they store.
    def __getitem__(self, key: str) -> Any:
        if not self._accessed:
            self._use()
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        if not self._accessed:
            self._use()
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        if not self._accessed:
            self._use()
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        if not self._accessed:
            self._use()
        return dict.__iter__(self)

    def __len__(self) -> int:
        if not self._accessed:
            self._use()
        return dict.__len__(self)

    def items(self):  # type: ignore[override]  # written out: the JSON encoder calls it at every commit
        if not self._accessed:
            self._use()
        return dict.items(self)

    def copy(self) -> Dict[str, Any]:  # type: ignore[override]
        """A plain ``dict`` of the data (as ``dict.copy`` gives for any dict subclass)."""
        if not self._accessed:
            self._use()
        return dict(dict.items(self))  # dict.copy would read a subclass key by key through __getitem__

    # The other reads, as dict's own once the session is open (``keys``, ``items``, ``==``, ``|``, ...)
    keys = _opening(dict.keys)
    values = _opening(dict.values)
    __reversed__ = _opening(dict.__reversed__)  # type: ignore[attr-defined]
    __eq__ = _opening(dict.__eq__)
    __ne__ = _opening(dict.__ne__)
    __or__ = _opening(dict.__or__)  # type: ignore[attr-defined]  # a plain dict, as dict | dict gives
    __ror__ = _opening(dict.__ror__)  # type: ignore[attr-defined]
    __hash__ = None  # type: ignore[assignment]  # a dict: mutable, so unhashable

    def __setitem__(self, key: str, value: Any) -> None:
        if not self._accessed or self._status is not _OPEN:
            self._writable()
        _check_entry(key, value, self._manager.codec)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._writable()
        dict.__delitem__(self, key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key in self:
            return dict.__getitem__(self, key)
        self[key] = default
        return default

    def pop(self, key: str, *default: Any) -> Any:
        """As ``dict.pop``; a key that is not there changes nothing and needs no open session."""
        if key not in self:
            return dict.pop(self, key, *default)
        self._writable()
        return dict.pop(self, key)

    def popitem(self) -> Tuple[str, Any]:
        """As ``dict.popitem``: the last key and its value (LIFO)."""
        self._writable()
        return dict.popitem(self)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """As ``dict.update``; every value is checked before any is written, so a refused one changes nothing."""
        entries = dict(*args, **kwargs)
        if not entries:
            return
        self._writable()
        codec = self._manager.codec
        for key, value in entries.items():
            _check_entry(key, value, codec)
        dict.update(self, entries)

    def __ior__(self, other: Any) -> "Session":  # type: ignore[override,misc]
        if not isinstance(other, Mapping):  # as dict's |=: pairs too, anything else a TypeError
            other = dict(other)
        self.update(other)
        return self

    def clear(self) -> None:
        self._writable()
        dict.clear(self)

    def __repr__(self) -> str:  # never shows the id: reprs end up in logs
        if not self._opened:
            return "<Session (not opened)>"
        state = "new" if self._new_reason is not None else "loaded"
        return f"<Session {state} {dict.__repr__(self)}>"

    def __reduce__(self) -> Any:
        raise SerializationError("a Session belongs to its request and cannot be pickled or copied; use dict(session)")

    # Public state
    @property
    def id(self) -> str:
        if not self._accessed:
            self._use()
        return self._id

    @property
    def handle(self) -> str:
        """This session's ``SessionInfo.handle`` (a short hash of the id, never the id): what marks "this
        device" in a list from ``SessionManager.sessions_of``."""
        return _sid_hash(self.id)

    @property
    def is_new(self) -> bool:
        """True when no valid cookie named a live record (or after ``regenerate``/``flush``)."""
        if not self._accessed:
            self._use()
        return self._new_reason is not None

    @property
    def new_reason(self) -> Optional[str]:
        """Why the session is new: None for a loaded session, else ``"no-cookie"``, ``"bad-signature"``,
        ``"not-found"`` (a validly signed cookie whose record is missing, expired or corrupt),
        ``"regenerated"`` (after ``regenerate()`` or ``flush()``) or ``"out-of-scope"`` (the request path
        is outside the cookie path)."""
        if not self._accessed:
            self._use()
        return self._new_reason

    @property
    def modified(self) -> bool:
        """Whether the data (compared as JSON, key order included) or the id changed since it was loaded,
        or ``modified = True`` forces a save. Set it to True to save at commit even without a change
        (e.g. after changing a value in place in a way JSON cannot see); False drops that force only."""
        if not self._accessed:
            self._use()
        return self._modified(_data_json(self, self._manager.codec))

    @modified.setter
    def modified(self, value: bool) -> None:
        self._writable()
        self._forced = bool(value)

    @property
    def cookie(self) -> SessionCookie:
        if not self._accessed:
            self._use()
        return self._cookie

    @property
    def closed(self) -> bool:
        """Whether the session was committed (its response started)."""
        return self._status is _COMMITTED

    @property
    def owner(self) -> Optional[str]:
        """Who the session belongs to (typically the user id, set at login), or None. The record keeps it as
        the data key ``OWNER_KEY``, which express-session keeps too; it is not among the session's data. Setting
        it is a change that is saved; ``SessionManager.sessions_of`` lists the sessions of an owner."""
        if not self._accessed:
            self._use()
        return self._owner

    @owner.setter
    def owner(self, value: Optional[str]) -> None:
        self._writable()
        if value is not None and not _is_owner(value):
            raise ConfigurationError(
                f"owner must be None or a non-empty str of at most {MAX_OWNER_LENGTH} characters: {_shown(value)}"
            )
        self._owner = value

    # Lifecycle: the policy is in the manager.
    def save(self) -> None:
        """Write the session to the store now; the end-of-request write is skipped if nothing changes after."""
        self._writable()
        self._manager._run(self._manager._save_now(self))

    def reload(self) -> None:
        """Replace the data and cookie with what the store holds now (raises SessionNotFoundError if gone)."""
        self._writable()
        self._manager._run(self._manager._reload(self))

    def destroy(self) -> None:
        """Delete the record now and have the response expire the browser's cookie."""
        self._writable()
        self._manager._run(self._manager._destroy(self))

    def regenerate(self, keep_data: bool = False) -> None:
        """Move to a new session id, dropping the data unless ``keep_data``. Call it on every privilege
        change (log in, log out, sudo) so a session id planted before the change is worthless after it
        (session fixation, OWASP Session Management Cheat Sheet). The old record is deleted when the
        session is committed (or saved), before the new one is written, once."""
        self._writable(allow_destroyed=True)
        owner = self._owner
        self._manager._regenerate(self, keep_data)
        if keep_data:  # the owner goes with the data (a new id at login keeps neither: set it after)
            self._owner = owner

    def flush(self) -> None:
        """End the session now and go on with a fresh, empty one under a new id (Django's ``flush``).

        The stored record is deleted at once (and the old id never comes back). The fresh session is
        saved at commit by the rules for a new session: a value written after ``flush()`` (a flash
        message) is stored and its cookie sent; if nothing is written, the response expires the
        browser's cookie."""
        self._writable(allow_destroyed=True)
        self._manager._run(self._manager._flush(self))

    # The same for async code: an AsyncStore is awaited, a sync store called inline (MemoryStore) or in a
    # worker thread (a blocking one), so an async endpoint never blocks its event loop on the store.
    async def asave(self) -> None:
        """``save()`` for async code."""
        self._writable()
        await self._manager._arun(self._manager._save_now(self))

    async def areload(self) -> None:
        """``reload()`` for async code."""
        self._writable()
        await self._manager._arun(self._manager._reload(self))

    async def adestroy(self) -> None:
        """``destroy()`` for async code."""
        self._writable()
        await self._manager._arun(self._manager._destroy(self))

    async def aflush(self) -> None:
        """``flush()`` for async code."""
        self._writable(allow_destroyed=True)
        await self._manager._arun(self._manager._flush(self))

    async def aregenerate(self, keep_data: bool = False) -> None:
        """``regenerate()`` for async code (it calls no store until the commit, so this only mirrors it)."""
        self.regenerate(keep_data)

    async def _apreload(self) -> None:
        """``_preload`` for async code."""
        if not self._opened:
            await self._manager._arun(self._manager._open_into(self, *self._request()))

    def touch(self) -> None:
        """Restart the expiry now (every committed request does this anyway; with ``touch_after`` the
        store is still told only when its expiry is due, see ``SessionManager``)."""
        self._writable()
        self._manager._slide_expiry(self, self._manager._now_ms())

    # Predicates the manager's save rules read
    @property
    def _saved(self) -> bool:
        """This request wrote the record under the current id (``save()``, or reloaded it)."""
        return self._synced_json is not None

    @property
    def _may_be_stored(self) -> bool:
        """The store may hold a record under the current id."""
        return self._new_reason is None or self._synced_json is not None

    def _modified(self, data_json: str) -> bool:
        return (
            self._forced or self._id_changed or data_json != self._loaded_json or self._owner != self._stored_owner
        )

    def _changed_since_saved(self, data_json: str) -> bool:
        """Something the store does not hold yet, after ``save()`` or ``reload()``."""
        return (
            data_json != self._synced_json or self._cookie_unsaved or self._created_unsaved or self._forced
            or self._owner != self._stored_owner
        )

    @property
    def _baseline_json(self) -> str:
        """The data's JSON that this request's changes are measured from when they are merged into the
        stored record: as loaded, or as this request last saved (or reloaded) it."""
        synced = self._synced_json
        return self._loaded_json if synced is None else synced

    # Transitions (the manager calls these; each sets a consistent group of fields)
    def _start(
        self,
        sid: str,
        new_reason: Optional[str],
        data: Dict[str, Any],
        loaded_json: str,
        created_ms: Optional[int],
        original_max_age_ms: Optional[float],
        expires_ms: Optional[int],
        sent_expires_ms: Optional[int] = None,
        created_unsaved: bool = False,
        owner: Optional[str] = None,
    ) -> None:
        """Become session ``sid``: loaded (``new_reason`` None) or new, with nothing yet written, sent or
        changed. A session starts once per request (``_restart`` starts it again); the status is left as it is."""
        self._id = sid
        self._new_reason = new_reason  # why the session is new (see new_reason); None when loaded
        self._opened = True
        self._replace_data(data)
        self._loaded_json = loaded_json  # the data's JSON when the request opened it: "modified" compares with it
        self._synced_json: Optional[str] = None  # the data's JSON the store holds under _id, known because this
        #                                     request wrote it (save(), commit) or read it (reload())
        self._created_ms = created_ms
        self._created_unsaved = created_unsaved  # absolute_timeout: the record has no creation time; its clock
        #                                          started this request
        self._stored_expires_ms = expires_ms  # the expiry the store holds (as loaded or last written): touch_after
        self._sent_expires_ms = sent_expires_ms  # when the browser's copy of the cookie expires, if known: cookie_refresh
        self._cookie = SessionCookie(self, self._manager.cookie_options, original_max_age_ms, expires_ms)
        self._owner = owner  # session.owner
        self._stored_owner = owner  # the owner the store holds, as loaded or last written
        self._record_gone = False  # the store found no live record under _id when this request wrote or touched
        #                       it (another request destroyed it or regenerated it away): write nothing more
        self._id_changed = False  # regenerate() gave a new id: that alone counts as modified (express-session)
        self._forced = False  # `session.modified = True`: save at commit even if the data is unchanged
        self._cookie_unsaved = False  # cookie.max_age was set and not yet written to the store...
        self._cookie_unsent = False  # ...or not yet sent to the browser
        self._signed: Optional[str] = None  # "s:<id>.<mac>" from the request, verified with the current secret
        self._resign = False  # the request's cookie was signed with an older secret: send a fresh one

    def _verified_by(self, signed: str, current_secret: bool) -> None:
        """The request's cookie ``signed`` named this loaded session; re-sign it unless ``current_secret``."""
        self._signed = signed if current_secret else None
        self._resign = not current_secret

    def _leave_scope(self, reason: str) -> None:
        if self._status is _OPEN:  # a session first read after its response started stays committed
            self._status, self._closed_reason = _OUT_OF_SCOPE, reason

    def _cookie_changed(self) -> None:
        self._cookie_unsaved = self._cookie_unsent = True

    def _cookie_sending(self) -> None:
        """This response sends the cookie: the browser's copy will expire when the cookie does now."""
        self._sent_expires_ms = self._cookie.expires_ms

    def _mark_saved(self, data_json: str) -> None:
        """The store now holds ``data_json`` (merged with what other requests wrote meanwhile) and the
        current cookie under the current id."""
        self._synced_json = data_json
        self._cookie_unsaved = self._forced = self._created_unsaved = False
        self._stored_owner = self._owner
        self._stored_expires_ms = self._cookie.expires_ms

    def _owner_merged(self, stored: Optional[str]) -> None:
        """A concurrent write is merged: an owner this request did not change is the stored one."""
        if self._owner == self._stored_owner:
            self._owner = self._stored_owner = stored

    def _mark_gone(self) -> None:
        """The store has no live record under the current id any more: nothing more is written for it,
        and no cookie naming it is sent."""
        self._record_gone = True

    def _reloaded(
        self, data: Dict[str, Any], stored_json: str, created_ms: Optional[int],
        original_max_age_ms: Optional[float], expires_ms: Optional[int], sent_expires_ms: Optional[int],
        created_unsaved: bool, owner: Optional[str],
    ) -> None:
        """Take what the store holds now; "modified" still compares with the data the request opened."""
        self._replace_data(data)
        self._owner = self._stored_owner = owner
        self._created_ms, self._created_unsaved = created_ms, created_unsaved
        self._stored_expires_ms, self._sent_expires_ms = expires_ms, sent_expires_ms
        self._cookie = SessionCookie(self, self._manager.cookie_options, original_max_age_ms, expires_ms)
        self._synced_json = stored_json

    def _restart(
        self, sid: str, data: Dict[str, Any], created_ms: int, original_max_age_ms: Optional[float],
        *, flushed: bool = False,
    ) -> None:
        """Go on, open, under the new id ``sid``; a stored old record is deleted at commit. After
        ``regenerate()`` the new id alone counts as a change (express-session); after ``flush()`` (whose
        old record is already gone) it does not, and the browser's cookie expires unless a new one is sent."""
        if self._status is not _DESTROYED and self._may_be_stored:
            self._stale_ids += (self._id,)
        self._start(sid, "regenerated", data, "{}", created_ms, original_max_age_ms, None)
        self._status, self._closed_reason = _OPEN, None
        self._id_changed = not flushed
        self._expire_browser_cookie = self._expire_browser_cookie or flushed

    def _stale_deleted(self) -> None:
        """The first of ``_stale_ids`` is deleted from the store."""
        self._stale_ids = self._stale_ids[1:]

    def _mark_destroyed(self) -> None:
        self._status, self._closed_reason = _DESTROYED, _DESTROYED_REASON
        self._owner = None
        dict.clear(self)

    def _replace_data(self, data: Dict[str, Any]) -> None:
        if data is not self:
            if dict.__len__(self):
                dict.clear(self)
            if data:
                dict.update(self, data)

    def _close(self, set_cookies: List[str]) -> None:
        self._status, self._closed_reason = _COMMITTED, _CLOSED
        self._set_cookies = set_cookies


#: How deep session data may nest, the session itself counting as one level (``session["a"] = [[1]]`` is 3).
#: Deeper values are refused at assignment: the JSON decoder recurses, and a record must load back even
#: when the request is handled deep in a framework's stack.
MAX_DEPTH = 100
#: Integers with more digits are refused at assignment: Python 3.11+ will not convert them to or from text
#: (``sys.set_int_max_str_digits``), so their record could not be written or read back.
MAX_INT_DIGITS = 4300
_INT_BOUND = 10**MAX_INT_DIGITS
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_OR_ESCAPE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")  # also as JSON escapes (Node's)
_LONG_INT = re.compile(r"(?<![0-9])[0-9]{%d}" % (MAX_INT_DIGITS + 1))  # from a run's start: linear


def _may_not_load_back(text: str) -> bool:
    """Cheap: whether encoded JSON may hold what cannot round-trip (a lone surrogate, which is not UTF-8, as
    itself or as an escape such as Node's ``"\\ud83d"``; a too long int; nesting beyond MAX_DEPTH). False
    alarms (strings full of brackets, escaped surrogate pairs) only cost a closer look."""
    if ("\\u" in text or not text.isascii()) and _SURROGATE_OR_ESCAPE.search(text):
        return True
    if len(text) < 2 * MAX_DEPTH:  # too short to nest that deep (or to hold such an int): most records
        return False
    return text.count("[") + text.count("{") >= MAX_DEPTH or (
        len(text) > MAX_INT_DIGITS and _LONG_INT.search(text) is not None
    )


def _unstorable(value: Any, level: int) -> Optional[str]:
    """Why ``value`` (a container in it at nesting ``level``) cannot be stored so that it loads back, or None.
    For values Python's encoder accepted (no cycles). Iterative: it must not hit the limit it checks for."""
    pending = [(value, level)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return "it holds a lone surrogate, which is not valid Unicode text"
        elif isinstance(item, int):
            if not -_INT_BOUND < item < _INT_BOUND:
                return f"an int has more than MAX_INT_DIGITS ({MAX_INT_DIGITS}) digits"
        elif isinstance(item, (dict, list, tuple)):
            if level > MAX_DEPTH:
                return f"it nests deeper than MAX_DEPTH ({MAX_DEPTH}) levels, the session counting as one"
            children = [*item, *item.values()] if isinstance(item, dict) else item
            pending.extend((child, level + 1) for child in children)
    return None


def _check_entry(key: Any, value: Any, codec: Optional["Codec"] = None) -> None:
    """SerializationError naming the key unless ``session[key] = value`` is stored and loads back equal
    (with a ``codec``: back as it is, types included, through ``codec.encode`` and ``codec.decode``)."""
    if not isinstance(key, str):
        raise SerializationError(f"session keys must be str, not {type(key).__name__} ({_shown(key)})")
    if key in _RESERVED_KEYS:
        raise SerializationError(f"session key {_shown(key)} is reserved by the record format")
    if not key.isascii() and _SURROGATE.search(key):
        raise SerializationError(f"session key {_shown(key)} holds a lone surrogate, which is not valid Unicode text")
    stored = value if codec is None else _encode_value(codec, key, value)
    kind = type(stored)
    if kind is str:
        simple = stored.isascii() or not _SURROGATE.search(stored)
    else:
        simple = (kind is int and -_INT_BOUND < stored < _INT_BOUND) or kind is bool or stored is None
    if not simple:
        _check_json_value(key, stored)
    if codec is not None:
        _check_codec_round_trip(key, value, stored, codec)


def _check_json_value(key: str, value: Any) -> None:
    """SerializationError naming the key unless ``value`` is JSON that loads back equal."""
    try:
        text = _python_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"session value for key {_shown(key)} is not JSON-serialisable: {exc}") from None
    why = _unstorable(value, 2) if _may_not_load_back(text) else None
    if why:
        raise SerializationError(f"session value for key {_shown(key)} cannot be stored: {why}")


def _check_codec_round_trip(key: str, value: Any, encoded: Any, codec: "Codec") -> None:
    """``encoded``, the codec's JSON form of ``value``, decodes back to ``value`` with its types: what would
    come back changed (a type the codec does not know, precision it drops) is refused now."""
    try:
        back = codec.decode(_decode_json(_encode_json(encoded)))
    except Exception as exc:
        raise SerializationError(
            f"session value for key {_shown(key)} would not load back: the codec failed ({type(exc).__name__})"
        ) from None
    if not _same_value(back, value):
        raise SerializationError(
            f"session value for key {_shown(key)} would not load back as it is (a {type(value).__name__}): "
            "store a value of a type the codec keeps"
        )


def _same_value(first: Any, second: Any) -> bool:
    """Equal, with the same types all the way down (``Markup("a") == "a"`` but is not the same value),
    except that a whole float may come back as the equal int: records are written as JavaScript writes
    numbers (one number type: ``1.0`` is ``1``). Iterative, like ``_unstorable``."""
    pending = [(first, second)]
    while pending:
        a, b = pending.pop()
        if type(a) is not type(b):
            if not ({type(a), type(b)} == {int, float} and a == b):
                return False
        if isinstance(a, dict):
            if list(a) != list(b):
                return False
            pending.extend((a[key], b[key]) for key in a)
        elif isinstance(a, (list, tuple)):
            if len(a) != len(b):
                return False
            pending.extend(zip(a, b))
        elif a != b:
            return False
    return True


def _encode_value(codec: "Codec", key: str, value: Any) -> Any:
    try:
        return codec.encode(value)
    except Exception as exc:
        raise SerializationError(
            f"session value for key {_shown(key)} cannot be encoded by the codec ({type(exc).__name__})"
        ) from None


def _encoded(data: Dict[str, Any], codec: Optional["Codec"]) -> Dict[str, Any]:
    """The data as the record holds it: each value through ``codec.encode`` (the data itself without one)."""
    if codec is None:
        return data
    return {key: _encode_value(codec, key, value) for key, value in data.items()}


def _decoded(data: Dict[str, Any], codec: Optional["Codec"]) -> Dict[str, Any]:
    """The record's data as the application sees it: each value through ``codec.decode``."""
    if codec is None:
        return data
    return {key: codec.decode(value) for key, value in data.items()}


def _data_json(data: Dict[str, Any], codec: Optional["Codec"] = None) -> str:
    """The data as JSON.stringify writes it (each value through the codec, if any), or a SerializationError
    naming the first key that cannot be stored (a value changed in place after its assignment is only seen
    here)."""
    data = _encoded(data, codec)
    try:
        text: Optional[str] = _python_json(data)
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is None or _may_not_load_back(text):
        for key, value in data.items():
            _check_entry(key, value)
        if text is None:  # every value encodes alone: the stack was too deep for all of them together
            raise SerializationError("the session data cannot be encoded here (the call stack is too deep)")
    return _as_javascript(text, data)


#: What ``SessionManager._loaded_record`` gives ``Session._start``: data, its JSON, created (ms), originalMaxAge (ms),
#: expires (ms), the expiry of the cookie last sent (ms), whether the creation time is not in the record
#: yet (under absolute_timeout: its clock starts now, and the next commit writes it), and the owner
_LoadedRecord = Tuple[
    Dict[str, Any], str, Optional[int], Optional[float], Optional[int], Optional[int], bool, Optional[str]
]


@dataclass(frozen=True)
class SessionInfo:
    """One live session of an owner, as ``SessionManager.sessions_of`` lists it (an account page's "where
    you are logged in"). Times are aware UTC datetimes, None when unknown.

    - ``handle``: a short hash of the session id (the tag of that session in this module's log lines),
      never the id: it cannot be turned back into the id, so it is safe to show, and it only ends a
      session together with its owner (``end_session``).
    - ``created``: when the session started (``regenerate()`` at login restarts it); recorded for
      sessions with an owner, and under ``absolute_timeout``.
    - ``last_seen``: when a request last extended the session (its expiry minus the cookie's max age, so
      up to ``touch_after`` early with that option); for a browser-session cookie, from the store's
      deadline minus its ``default_ttl``.
    - ``expires``: when the session ends unless a request comes.
    - ``data``: the data keys the caller asked for (``sessions_of(owner, expose=...)``), those present.
    """

    handle: str
    created: Optional[datetime]
    last_seen: Optional[datetime]
    expires: Optional[datetime]
    data: Dict[str, Any]


def _exposed(keys: Iterable[str]) -> List[str]:
    """``sessions_of``'s ``expose``: data keys (str), checked."""
    if isinstance(keys, str) or not isinstance(keys, Iterable):
        raise ConfigurationError(f"expose must be a list of data keys, not {type(keys).__name__}")
    keys = list(keys)
    if not all(isinstance(key, str) for key in keys):
        raise ConfigurationError("expose must be a list of data keys (str)")
    return keys


def _utc(ms: Optional[float]) -> Optional[datetime]:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc)


#: A piece of the manager's policy that calls the store: a generator that yields each call as
#: ``(method, args)``, is sent the call's result, and returns its own result (see ``SessionManager._run``).
_Steps = Generator[Tuple[str, Tuple[Any, ...]], Any, Any]

_SYNC_CALL_ON_ASYNC_STORE = (
    "this manager's store is async, so the session cannot call it from sync code: use the async methods "
    "(await session.asave(), areload(), adestroy(), aflush(); manager.aopen(), acommit()), as "
    "ASGISessionMiddleware does"
)


def _is_coroutine_function(function: Any) -> bool:
    """``inspect.iscoroutinefunction`` for a store's method, without importing inspect."""
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    return code is not None and bool(code.co_flags & 0x80)  # CO_COROUTINE


def _with_cache_headers(cookies: List[str], used: bool) -> List[Tuple[str, str]]:
    """The Set-Cookie headers, ``Cache-Control: no-cache="Set-Cookie"`` when there are any, and ``Vary:
    Cookie`` when the session was used (SPEC 9.11)."""
    headers = [("Set-Cookie", value) for value in cookies]
    if headers:
        headers.append(("Cache-Control", 'no-cache="Set-Cookie"'))
    if used:
        headers.append(("Vary", "Cookie"))
    return headers


# Manager ##################################################################################################


class SessionManager:
    """All session policy: options, cookie verification, loading, the save rules, and the cookie to send.

    The framework-free core is two calls per request::

        session = manager.open(cookie_header, secure=is_https, path=request_path)
        ...                                   # the application reads and writes the session
        for value in manager.commit(session, status): response.add_header("Set-Cookie", value)

    ``commit`` must run before any byte of the response is sent (the adapters call it when the headers are
    written); ``response_headers`` is ``commit`` plus the cache-safety headers.

    Concurrent requests of one session: a loaded session's write applies only the keys its request set,
    changed or deleted to the record as stored at that moment (``Store.update``, atomic per store; the
    later commit wins a key both changed), and a record another request destroyed or regenerated away is
    never written again, nor its id sent (``_write``, ``_merge``; README "Concurrent requests").

    Options (all validated here; messages name the option):

    - ``secret``: str or bytes, or a list of them: the first signs, all verify (rotate by prepending).
    - ``store`` (``MemoryStore()``), ``name`` (``"sid"``), ``cookie`` (``CookieOptions`` or a dict).
    - ``resave`` (False): write unmodified loaded sessions on every request instead of touching them.
    - ``save_uninitialized`` (False): store new sessions (and send their cookie) even when left empty.
    - ``rolling`` (False): send the cookie on every response of a loaded session, sliding the browser's
      expiry too.
    - ``genid`` (32-char random base64url): callable returning a new session id.
    - ``trust_proxy`` (False): the adapters believe ``X-Forwarded-Proto`` for HTTPS detection.
    - ``absolute_timeout`` (None): seconds after creation (or regenerate) when a session ends however
      active it is (OWASP); the idle timeout is ``cookie max_age``.
    - ``clock`` (``time.time``): seconds since the epoch; inject one in tests.
    - ``codec`` (None): a ``Codec`` that stores values JSON has no type for (Flask's tagged JSON); without
      one, values are plain JSON.

    Two opt-in throttles (off by default, so express-session's behaviour stays the default):

    - ``touch_after`` (None): seconds. A loaded, unmodified session whose stored expiry was extended less
      than ``touch_after`` ago is not touched, so a read-only request costs one store call (the read). When
      it was last extended is the stored expiry minus the cookie's original max age (with a store that
      returns its deadline, that deadline). The stored expiry then lags the sliding one by less than
      ``touch_after``, never more: a session idle for ``max_age - touch_after`` may already be gone. It
      applies only to sessions with a max age: a browser-session record lives by the store's default TTL,
      restarted at a time the manager cannot know, so it is touched on every request as without the option.
      ``session.touch()`` does not override it; ``session.modified = True`` forces a write.
    - ``cookie_refresh`` (None): a share of ``max_age`` between 0 (excluded) and 1. A modified session
      re-sends its cookie only when the browser's copy would expire within ``cookie_refresh * max_age``
      (or when its expiry is unknown); the record keeps the expiry last sent as ``SENT_EXPIRES_KEY``. The
      trade-off: the browser's copy may now expire before the record does, so an idle session ends between
      ``cookie_refresh * max_age`` and ``max_age`` after the last request, instead of exactly ``max_age``.
      With 1 every modified request re-sends the cookie, as without the option.
    """

    def __init__(
        self,
        secret: Union[Secret, Sequence[Secret]],
        store: Optional[Store] = None,
        name: str = "sid",
        cookie: Union[CookieOptions, Dict[str, Any], None] = None,
        resave: bool = False,
        save_uninitialized: bool = False,
        rolling: bool = False,
        genid: Optional[Callable[[], str]] = None,
        trust_proxy: bool = False,
        absolute_timeout: Optional[Seconds] = None,
        clock: Callable[[], float] = time.time,
        touch_after: Optional[Seconds] = None,
        cookie_refresh: Optional[float] = None,
        codec: Optional[Codec] = None,
    ) -> None:
        self._keys = _keys(secret)
        self.store = MemoryStore() if store is None else store
        if not all(callable(getattr(self.store, m, None)) for m in ("get", "set", "touch", "destroy")):
            raise ConfigurationError(
                "store must have get, set, touch and destroy methods (subclass sessions.Store or sessions.AsyncStore)"
            )
        self._async_store = _is_coroutine_function(self.store.get)
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ConfigurationError(f"name must be a valid cookie name (an HTTP token): {_shown(name)}")
        self.name = name
        self.cookie_options = CookieOptions.coerce(cookie)
        self._check_name_prefix()
        for flag, value in (("resave", resave), ("save_uninitialized", save_uninitialized),
                            ("rolling", rolling), ("trust_proxy", trust_proxy)):
            if not isinstance(value, bool):
                raise ConfigurationError(f"{flag} must be True or False, not {_shown(value)}")
        self.resave, self.save_uninitialized, self.rolling = resave, save_uninitialized, rolling
        self.trust_proxy = trust_proxy
        if genid is not None and not callable(genid):
            raise ConfigurationError("genid must be a callable returning a new session id (str)")
        self._genid = genid or _default_genid
        absolute = _seconds(absolute_timeout, "absolute_timeout", allow_zero=False)
        self._absolute_ms = None if absolute is None else _ms(absolute)
        if not callable(clock):
            raise ConfigurationError("clock must be a callable returning seconds since the epoch")
        self.clock = clock
        touch = _seconds(touch_after, "touch_after")
        self._touch_after_ms = None if touch is None else _ms(touch)
        if cookie_refresh is not None and (
            isinstance(cookie_refresh, bool) or not isinstance(cookie_refresh, (int, float))
            or not 0 < cookie_refresh <= 1
        ):
            raise ConfigurationError(
                f"cookie_refresh must be a share of max_age, more than 0 and at most 1, not {_shown(cookie_refresh)}"
            )
        self._cookie_refresh = cookie_refresh
        if codec is not None and not all(callable(getattr(codec, m, None)) for m in ("encode", "decode")):
            raise ConfigurationError("codec must have encode and decode methods (see sessions.Codec)")
        self.codec = codec
        max_age = self.cookie_options.max_age
        self._max_age_ms = None if max_age is None else _ms(max_age)
        self._warned_insecure = False
        # Cookie values whose signature verified -> (id, index of the key): only ever values that verified,
        # with this manager's fixed secrets, so an entry stays true; whether the session lives is the store's.
        self._verified: Dict[str, Tuple[str, int]] = {}
        self._record_format = _RecordFormat(self.cookie_options)
        self._set_cookie = _SetCookieFormat(self.name, self.cookie_options)

    def _check_name_prefix(self) -> None:
        options, lowered = self.cookie_options, self.name.lower()
        host_ready = options.secure is True and options.path == "/" and options.domain is None
        if lowered.startswith("__host-") and not host_ready:
            raise ConfigurationError("a '__Host-' cookie name needs secure=True, path='/' and no domain")
        if lowered.startswith("__secure-") and options.secure is not True:
            raise ConfigurationError("a '__Secure-' cookie name needs secure=True")

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # Request side: open ---------------------------------------------------------------------------------

    def open(self, cookie_header: Union[str, Iterable[str], None], secure: bool = False, path: str = "/") -> Session:
        """The session of a request, from its Cookie header(s); a new one when no valid cookie names a live
        record. ``secure`` says whether the request came over HTTPS; ``path`` is its URL path. Raises
        ``StoreError`` if the store fails."""
        session = Session(self)
        self._run(self._open_into(session, cookie_header, secure, path))
        session._accessed = True  # opened by the caller itself: in use
        return session

    async def aopen(
        self, cookie_header: Union[str, Iterable[str], None], secure: bool = False, path: str = "/"
    ) -> Session:
        """``open`` for async code: the store is awaited (an ``AsyncStore``), called inline (a non-blocking
        store such as ``MemoryStore``) or in a worker thread (a blocking one)."""
        session = Session(self)
        await self._arun(self._open_into(session, cookie_header, secure, path))
        session._accessed = True
        return session

    def open_lazy(self, request: Callable[[], Tuple[Any, bool, str]]) -> Session:
        """A session that opens on first use: ``request()`` then returns ``(cookie_header, secure, path)``.
        Adapters use this so a request that never touches its session costs (almost) nothing."""
        return Session(self, request)

    def is_secure(self, tls: bool, forwarded_proto: Optional[str] = None) -> bool:
        """Whether a request is HTTPS: over TLS, or (with ``trust_proxy``) per the first X-Forwarded-Proto."""
        if tls:
            return True
        if self.trust_proxy and forwarded_proto:
            return forwarded_proto.split(",", 1)[0].strip().lower() == "https"
        return False

    def _open_into(self, session: Session, cookie_header: Any, secure: bool, path: str) -> _Steps:
        session._secure = bool(secure)  # what the request is, not session state: read per response
        now_ms = self._now_ms()
        if not _path_matches(path or "/", self.cookie_options.path):
            self._start_new(session, "out-of-scope", now_ms)
            session._leave_scope(
                f"the request path is outside the session cookie's path {self.cookie_options.path!r}, "
                "so this request has no session and changes cannot be kept"
            )
            return
        reason = "no-cookie"
        for _, value in parse_cookie_header(cookie_header, self.name):
            sid, key_index = self._verified_id(value)
            if sid is None:
                reason = "bad-signature" if reason == "no-cookie" else reason
                continue
            loaded = self._loaded_record(sid, (yield "get", (sid,)), now_ms)
            if loaded is None:
                reason = "not-found"
                continue
            session._start(sid, None, *loaded)
            session._verified_by(value, current_secret=key_index == 0)
            return
        self._start_new(session, reason, now_ms)

    def _verified_id(self, value: str) -> Tuple[Optional[str], int]:
        verified = self._verified.get(value)
        if verified is not None:  # a returning browser: a dict lookup instead of an HMAC
            return verified
        if not value.startswith("s:"):
            log.debug("ignoring an unsigned session cookie")
            return None, -1
        sid, key_index = _unsign(value[2:], self._keys)
        if sid is None:
            log.debug("ignoring a session cookie with an invalid signature")
            return None, -1
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # bounded: start over rather than track which entries are recent
        self._verified[value] = sid, key_index
        return sid, key_index

    def _loaded_record(self, sid: str, got: Any, now_ms: int) -> Optional[_LoadedRecord]:
        """The live, sound record of ``sid`` as a ``_LoadedRecord``, or None, from ``got``, what the store's
        ``get`` returned. A store that returns ``(record, expires_at)`` is the authority on expiry (SPEC 8):
        its deadline replaces the record's ``cookie.expires``, which Node's connect-redis leaves stale."""
        try:  # a malformed answer is the store's failure too
            authority = isinstance(got, tuple)  # (record, expires_at): the store enforces expiry itself
            record, expires_at = got if authority else (got, None)
            deadline_ms = None if expires_at is None else round(float(expires_at) * 1000)
        except Exception as exc:
            raise _store_failure("get", exc) from None
        if record is None:
            log.debug("session %s: no record in the store", _sid_hash(sid))
            return None
        try:
            data, original_max_age_ms, expires_ms, created_ms, data_text, sent_ms, owner = _parse_record(
                record, deadline_ms
            )
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            log.warning("session %s: corrupt record in the store treated as missing (%s)", _sid_hash(sid), exc)
            return None
        why = _unstorable(data, 1) if _may_not_load_back(record) else None
        if why:  # loaded, it could never be written back: every commit would fail (SPEC 7)
            log.warning("session %s: record in the store treated as missing: %s", _sid_hash(sid), why)
            return None
        # The store's deadline decides (None: it has none); for plain text the record's cookie.expires does.
        expiry = deadline_ms if authority else expires_ms
        if expiry is not None and expiry <= now_ms:
            log.debug("session %s: record expired", _sid_hash(sid))
            return None
        created_unsaved = self._absolute_ms is not None and created_ms is None
        if created_unsaved:
            created_ms = now_ms  # a record from before absolute_timeout was enabled, or Node's: start its clock
        elif self._absolute_ms is not None and created_ms + self._absolute_ms <= now_ms:
            log.debug("session %s: absolute timeout reached", _sid_hash(sid))
            return None
        data_json = data_text if data_text is not None else _data_json(data)
        if self.codec is not None:
            try:
                data = _decoded(data, self.codec)
            except Exception as exc:
                log.warning("session %s: record the codec cannot decode treated as missing (%s)",
                            _sid_hash(sid), type(exc).__name__)
                return None
        return data, data_json, created_ms, original_max_age_ms, expires_ms, sent_ms, created_unsaved, owner

    def _start_new(self, session: Session, reason: str, now_ms: int) -> None:
        session._start(self._new_id(), reason, {}, "{}", now_ms, self._max_age_ms, None)
        self._slide_expiry(session, now_ms)

    def _new_id(self) -> str:
        sid = self._genid()
        if not isinstance(sid, str) or not sid:
            raise SessionError(f"genid must return a non-empty str, not {_shown(sid)}")
        try:
            sid.encode("utf-8")
        except UnicodeEncodeError:
            raise SessionError("genid returned a str that is not valid Unicode text") from None
        return sid

    def _slide_expiry(self, session: Session, now_ms: int) -> None:
        """expires = now + the original max age, capped by the absolute timeout."""
        cookie = session._cookie
        original = cookie.original_max_age_ms
        expires = None if original is None else now_ms + int(original)
        if self._absolute_ms is not None and expires is not None:
            expires = min(expires, session._created_ms + self._absolute_ms)
        cookie.expires_ms = expires

    # Session methods ------------------------------------------------------------------------------------

    def _save_now(self, session: Session) -> _Steps:
        now_ms = self._now_ms()
        self._slide_expiry(session, now_ms)
        data_json = _data_json(session, self.codec)
        yield from self._destroy_stale(session)
        yield from self._write(session, data_json)

    def _reload(self, session: Session) -> _Steps:
        sid = session._id
        loaded = self._loaded_record(sid, (yield "get", (sid,)), self._now_ms())
        if loaded is None:
            raise SessionNotFoundError("failed to load session: it expired or was destroyed")
        session._reloaded(*loaded)

    def _destroy(self, session: Session) -> _Steps:
        yield "destroy", (session._id,)
        yield from self._destroy_stale(session)
        session._mark_destroyed()

    def _regenerate(self, session: Session, keep_data: bool) -> None:
        now_ms = self._now_ms()
        data = dict(dict.items(session)) if keep_data else {}
        session._restart(self._new_id(), data, now_ms, self._max_age_ms)
        self._slide_expiry(session, now_ms)

    def _flush(self, session: Session) -> _Steps:
        yield from self._destroy(session)  # at once: the old id is dead whatever this request does next
        now_ms = self._now_ms()
        session._restart(self._new_id(), {}, now_ms, self._max_age_ms, flushed=True)
        self._slide_expiry(session, now_ms)

    def _destroy_stale(self, session: Session) -> _Steps:
        """Delete the records ``regenerate()`` left behind. The commit, which every request runs, calls it
        only when ``session._stale_ids`` is not empty: that test costs less than starting this generator."""
        while session._stale_ids:  # one at a time: after a failure the rest are still to delete
            yield "destroy", (session._stale_ids[0],)
            session._stale_deleted()

    # Response side: commit ------------------------------------------------------------------------------

    def commit(self, session: Session, status: int = 200) -> List[str]:
        """Decide and perform the store write or touch, close the session, and return the Set-Cookie
        header values to send. Call once, before any byte of the response. With a 5xx ``status`` nothing
        new is stored (the request failed). Raises ``StoreError`` or ``SerializationError`` (then nothing
        new was stored, though records that ``regenerate()`` left behind may be deleted already; send a 500
        without these cookies). A second call returns the first call's cookies
        (none after a failure: the session was not stored)."""
        if not session._accessed or session._status is _COMMITTED:
            return self._commit_unstored(session)
        return self._run(self._commit(session, status))

    async def acommit(self, session: Session, status: int = 200) -> List[str]:
        """``commit`` for async code (the store awaited, called inline, or in a worker thread, as ``aopen``)."""
        if not session._accessed or session._status is _COMMITTED:
            return self._commit_unstored(session)
        return await self._arun(self._commit(session, status))

    def response_headers(self, session: Session, status: int = 200) -> List[Tuple[str, str]]:
        """``commit`` plus cache safety: ``Vary: Cookie`` when the session was used, and
        ``Cache-Control: no-cache="Set-Cookie"`` when a cookie is set, so no shared cache serves one
        visitor's session to another."""
        used = session.accessed
        return _with_cache_headers(self.commit(session, status), used)

    async def aresponse_headers(self, session: Session, status: int = 200) -> List[Tuple[str, str]]:
        """``response_headers`` for async code."""
        used = session.accessed
        return _with_cache_headers(await self.acommit(session, status), used)

    @staticmethod
    def _commit_unstored(session: Session) -> List[str]:
        """The commit of a session that was never used (nothing to do, but late use must not pass
        silently) or was committed already (its first commit's cookies)."""
        if session._status is _COMMITTED:
            return list(session._set_cookies)
        session._close([])
        return []

    def _commit(self, session: Session, status: int) -> _Steps:
        """The end of a request, by the session's status (scs decides it in one switch too). The session is
        closed whatever happens, a store failure included."""
        cookies: List[str] = []
        try:
            if session._status is _DESTROYED:
                if session._stale_ids:
                    yield from self._destroy_stale(session)
                cookies = [self._clearing_cookie(session)]
            elif session._status is not _OUT_OF_SCOPE:
                sendable = self._cookie_allowed(session)
                if status >= 500:  # keep what was stored before; send the cookie only for what a save() stored
                    sent = sendable and session.is_new and session._saved
                    cookies = [self._session_cookie(session, self._now_ms())] if sent else []
                else:
                    cookies = yield from self._save_and_decide_cookie(session, sendable)
                if not cookies and session._expire_browser_cookie:  # flush() and nothing stored after it
                    cookies = [self._clearing_cookie(session)]
        finally:
            session._close(cookies)
        return list(cookies)

    def _save_and_decide_cookie(self, session: Session, sendable: bool) -> _Steps:
        now_ms = self._now_ms()
        self._slide_expiry(session, now_ms)
        data_json = _data_json(session, self.codec)
        is_new, modified = session._new_reason is not None, session._modified(data_json)
        send = sendable and self._should_set_cookie(session, is_new, modified, now_ms)
        if send:  # before the write, so that the record knows the expiry the browser will have
            session._cookie_sending()
        if session._stale_ids:  # first, as express-session does: a failure then leaves no second record
            yield from self._destroy_stale(session)
        # A new session whose cookie cannot reach the browser could never be found again: store nothing.
        if (sendable or not is_new) and self._should_save(session, is_new, modified, data_json):
            yield from self._write(session, data_json)
        elif not is_new and not session._record_gone and self._touch_due(session, now_ms):
            record, expires = self._record(session, data_json), self._store_expiry(session)
            if (yield "touch", (session._id, record, expires)) is False:
                session._mark_gone()
        # A record destroyed or regenerated away by another request: never hand the browser its id again.
        return [self._session_cookie(session, now_ms)] if send and not session._record_gone else []

    # The save rules: SPEC section 5's table, row by row, plus our additions (marked +).
    def _should_save(self, session: Session, is_new: bool, modified: bool, data_json: str) -> bool:
        if session._saved:  # + save() (or reload()) this request: write only what changed since
            return session._changed_since_saved(data_json)
        if is_new:
            return self.save_uninitialized or modified
        return (
            self.resave or modified
            or session._cookie_unsaved  # + a new cookie.max_age is stored
            or session._created_unsaved  # + absolute_timeout: the creation time is stored, once
        )

    def _should_set_cookie(self, session: Session, is_new: bool, modified: bool, now_ms: int) -> bool:
        if is_new:
            return self.save_uninitialized or modified or session._saved  # + what save() stored
        has_expiry = session._cookie.expires_ms is not None
        return (
            self.rolling
            or (has_expiry and modified and self._cookie_due(session, now_ms))  # + cookie_refresh
            or session._cookie_unsent  # + a new cookie.max_age is sent
            or session._resign  # + re-signed with the current secret after a rotation
        )

    def _cookie_due(self, session: Session, now_ms: int) -> bool:
        """cookie_refresh: the browser's copy expires within its share of max_age, or when is unknown."""
        if self._cookie_refresh is None:
            return True
        sent = session._sent_expires_ms
        return sent is None or sent - now_ms <= self._cookie_refresh * session._cookie.original_max_age_ms

    def _touch_due(self, session: Session, now_ms: int) -> bool:
        """touch_after: the stored expiry was extended ``touch_after`` ago or more, or when is unknown (a
        browser-session record). Extended at = stored expiry - original max age; an absolute timeout's cap
        only makes that earlier, so a capped session is touched (uselessly, but never too late)."""
        if self._touch_after_ms is None:
            return True
        stored, original = session._stored_expires_ms, session._cookie.original_max_age_ms
        return stored is None or original is None or now_ms - (stored - original) >= self._touch_after_ms

    def _cookie_allowed(self, session: Session) -> bool:
        """A Secure cookie is never sent over plain HTTP (the browser would drop it anyway)."""
        if self.cookie_options.secure is True and not session._secure:
            if not self._warned_insecure:
                self._warned_insecure = True
                log.warning(
                    "not sending the Secure session cookie over plain HTTP; behind a TLS proxy, pass "
                    "trust_proxy=True and have the proxy set X-Forwarded-Proto (warned once)"
                )
            return False
        return True

    def _write(self, session: Session, data_json: str) -> _Steps:
        """Store the session. Nobody else knows a new or regenerated id yet: a plain ``set``. A loaded
        session may have been changed by concurrent requests since it was loaded: ``update`` applies this
        request's changes (``_merge``) to the record as stored now, and writes nothing if it is gone."""
        if session._record_gone:  # a save() found it destroyed: nothing is written for it again
            return
        record, expires = self._record(session, data_json), self._store_expiry(session)
        if session._new_reason is not None:
            yield "set", (session._id, record, expires)
        elif not (yield "update", (session._id, self._merge(session, data_json, record), expires)):
            session._mark_gone()
            return
        session._mark_saved(data_json)

    def _merge(self, session: Session, data_json: str, record: str) -> _Merge:
        """The change ``Store.update`` applies: this request's changes since its baseline (the keys it
        set, changed or deleted, compared as JSON), merged into the record as it is now.

        - Stored data still equal to the baseline (no concurrent write, the usual case): ``record``,
          this request's full record, as a plain ``set`` would write.
        - Otherwise the stored data with this request's changes applied: a changed key keeps its place,
          a new key goes last, a deleted key goes; keys this request did not change keep the stored
          values, whoever wrote them (another request, Node). Two requests that change one key: the
          later commit wins for that key. The cookie object is this request's (its fresh expiry), and so
          is ``__createdAt`` under ``absolute_timeout``, and ``__cookieSentExpires`` under ``cookie_refresh``
          (without them, stored ones are kept as they are).
        - A stored text that is not a record (or holds what JSON cannot write back): replaced by ``record``.
        """
        baseline, data = session._baseline_json, _encoded(session, self.codec)
        created, sent = self._record_times(session)
        # when this response sends the cookie, sent is new: the stored text then differs and merge() runs
        unchanged = self._record_format.after_cookie(created, baseline, sent, session._stored_owner)
        changes: List[Tuple[Dict[str, Any], List[str]]] = []  # computed once, on the first conflict

        def merge(stored: str) -> str:
            if not changes:
                before = _decode_json(baseline)
                changed = {key: value for key, value in data.items()
                           if key not in before or _encode_json(value) != _encode_json(before[key])}
                changes.append((changed, [key for key in before if key not in data]))
            changed, deleted = changes[0]
            try:
                current = _decode_json(stored)
                del current["cookie"]
                for key in deleted:
                    current.pop(key, None)
                current.update(changed)
                session._owner_merged(current.pop(OWNER_KEY, None))
                if created is not None:
                    current.pop(CREATED_KEY, None)
                if self._cookie_refresh is not None:
                    current.pop(SENT_EXPIRES_KEY, None)
                merged = _encode_json(current)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError):  # not a record
                return record
            return self._record(session, merged)

        return _Merge(record, unchanged, merge)

    # Drivers: the policy above yields each store call as ``(method, args)`` and is sent its result.
    # One policy, two ways to perform its calls: here for sync code, awaited for async code.

    def _run(self, steps: _Steps) -> Any:
        """Perform the store calls ``steps`` yields on this (sync) store; return what ``steps`` returns."""
        try:
            call = next(steps)
        except StopIteration as done:
            return done.value
        return self._perform(steps, call)

    def _perform(self, steps: _Steps, call: Tuple[str, Tuple[Any, ...]]) -> Any:
        """Perform ``call`` and the further calls of ``steps`` on this sync store. A store's exception is
        thrown into ``steps`` as ``_store_failure`` makes it (the policy may clean up; it propagates)."""
        store = self.store
        try:
            while True:
                if self._async_store:
                    raise SessionError(_SYNC_CALL_ON_ASYNC_STORE)
                method, args = call
                try:
                    result = getattr(store, method)(*args)
                except Exception as exc:
                    call = steps.throw(_store_failure(method, exc))
                else:
                    call = steps.send(result)
        except StopIteration as done:
            return done.value

    async def _arun(self, steps: _Steps) -> Any:
        """``_run`` for async code. The policy's own work runs on the event loop; its store calls are
        awaited on an ``AsyncStore``, made inline on a store that does not block (``MemoryStore``), and
        made in a worker thread on a blocking one, so the loop never waits on a store. Steps that call no
        store (a new session, an unused one) need no thread."""
        try:
            call = next(steps)
        except StopIteration as done:
            return done.value
        if not self._async_store:
            if not getattr(self.store, "blocking", True):
                return self._perform(steps, call)
            import asyncio  # here: importing it up front would double the import time of sessions.py

            return await asyncio.to_thread(self._perform, steps, call)
        store = self.store
        try:
            while True:
                method, args = call
                try:
                    result = await getattr(store, method)(*args)
                except Exception as exc:
                    call = steps.throw(_store_failure(method, exc))
                except BaseException:  # cancelled (the client went away): end the policy now, its
                    steps.close()  # finally blocks run (a commit closes its session), then go
                    raise
                else:
                    call = steps.send(result)
        except StopIteration as done:
            return done.value

    def _store_expiry(self, session: Session) -> Optional[float]:
        expires = session._cookie.expires_ms
        if expires is None and self._absolute_ms is not None:
            expires = session._created_ms + self._absolute_ms
        return None if expires is None else expires / 1000

    def _record(self, session: Session, data_json: str) -> str:
        cookie = session._cookie
        created, sent = self._record_times(session)
        return self._record_format.text(
            cookie.original_max_age_ms, cookie.expires_ms, self._secure_attribute(session), created, data_json, sent,
            session._owner,
        )

    def _record_times(self, session: Session) -> Tuple[Optional[int], Optional[int]]:
        """What the record stores as ``CREATED_KEY`` and ``SENT_EXPIRES_KEY`` (None: left out): the creation
        time only under ``absolute_timeout`` or for a session with an owner (``SessionInfo.created``), the
        expiry of the cookie last sent only under ``cookie_refresh``."""
        return (
            None if self._absolute_ms is None and session._owner is None else session._created_ms,
            None if self._cookie_refresh is None else session._sent_expires_ms,
        )

    def _secure_attribute(self, session: Session) -> bool:
        secure = self.cookie_options.secure
        return secure is True or (secure == "auto" and session._secure)

    def _session_cookie(self, session: Session, now_ms: int) -> str:
        signed = session._signed
        if signed is None:
            signed = "s:" + _sign(session._id, self._keys[0])
        expires = session._cookie.expires_ms
        max_age = None if expires is None else max(0, (expires - now_ms) // 1000)
        return self._set_cookie.value(_encode_signed(signed), max_age, expires, self._secure_attribute(session))

    def _clearing_cookie(self, session: Session) -> str:
        return self._set_cookie.clearing(self._secure_attribute(session))

    # Owners: who is logged in where ---------------------------------------------------------------------

    def sessions_of(self, owner: str, expose: Iterable[str] = ()) -> List[SessionInfo]:
        """The live sessions whose ``Session.owner`` is ``owner``, most recently seen first, each with the
        data keys named in ``expose`` (e.g. a user agent the app stored at login). Found through the
        store's owner index (``Store.records_of``): a store without one is a ConfigurationError."""
        return self._run(self._sessions_of(owner, _exposed(expose)))

    def end_session(self, owner: str, handle: str) -> bool:
        """End the session of ``owner`` whose ``SessionInfo.handle`` is ``handle``; False if ``owner`` has no
        such live session (so one owner's handle never ends another owner's session)."""
        return self._run(self._end_session(owner, handle))

    def end_sessions_of(self, owner: str, keep: Optional[Session] = None) -> int:
        """End every live session of ``owner`` but ``keep`` (the session of the request asking: "log out
        everywhere else"; None ends them all); returns how many were ended. A request of an ended session
        still in flight writes nothing back (``Store.update`` and ``touch`` never re-create a record).
        A store failure part way leaves the rest alive: call it again."""
        return self._run(self._end_sessions_of(owner, keep))

    async def asessions_of(self, owner: str, expose: Iterable[str] = ()) -> List[SessionInfo]:
        """``sessions_of`` for async code (the store called as ``acommit`` calls it)."""
        return await self._arun(self._sessions_of(owner, _exposed(expose)))

    async def aend_session(self, owner: str, handle: str) -> bool:
        """``end_session`` for async code."""
        return await self._arun(self._end_session(owner, handle))

    async def aend_sessions_of(self, owner: str, keep: Optional[Session] = None) -> int:
        """``end_sessions_of`` for async code."""
        return await self._arun(self._end_sessions_of(owner, keep))

    def _sessions_of(self, owner: str, expose: List[str]) -> _Steps:
        records, now_ms = (yield from self._records_of(owner)), self._now_ms()
        infos = [info for sid, got in records.items()
                 if (info := self._session_info(sid, got, now_ms, expose)) is not None]
        return sorted(infos, key=lambda info: info.last_seen or _utc(0), reverse=True)

    def _end_session(self, owner: str, handle: str) -> _Steps:
        for sid in (yield from self._records_of(owner)):
            if _sid_hash(sid) == handle:
                yield "destroy", (sid,)
                return True
        return False

    def _end_sessions_of(self, owner: str, keep: Optional[Session]) -> _Steps:
        if keep is not None and not (isinstance(keep, Session) and keep.opened):
            raise ConfigurationError(f"keep must be None or a Session this request opened ({type(keep).__name__})")
        kept = None if keep is None else keep._id
        ended = 0
        for sid in (yield from self._records_of(owner)):
            if sid != kept:
                yield "destroy", (sid,)
                ended += 1
        return ended

    def _records_of(self, owner: str) -> _Steps:
        """``Store.records_of(owner)``; a store without an owner index is a ConfigurationError."""
        if not _is_owner(owner):
            raise ConfigurationError(
                f"owner must be a non-empty str of at most {MAX_OWNER_LENGTH} characters: {_shown(owner)}"
            )
        missing = f"{type(self.store).__name__} has no owner index (Store.records_of)"
        if not callable(getattr(self.store, "records_of", None)):
            raise ConfigurationError(missing)
        try:
            return (yield "records_of", (owner,))
        except StoreError as exc:
            if isinstance(exc.original, NotImplementedError):
                raise ConfigurationError(missing) from None
            raise

    def _session_info(self, sid: str, got: Any, now_ms: int, expose: List[str]) -> Optional[SessionInfo]:
        """The ``SessionInfo`` of a record as ``Store.get`` returns it, or None when this manager would not
        load it (corrupt, expired, past the absolute timeout)."""
        authority = isinstance(got, tuple)
        record, expires_at = got if authority else (got, None)
        deadline_ms = None if expires_at is None else round(float(expires_at) * 1000)
        try:
            data, original_ms, expires_ms, created_ms, _, _, _ = _parse_record(record, deadline_ms)
            shown = _decoded({key: data[key] for key in expose if key in data}, self.codec)
        except Exception:  # as _loaded_record: a record it cannot read is no session
            return None
        expiry = deadline_ms if authority else expires_ms
        if expiry is not None and expiry <= now_ms:
            return None
        if self._absolute_ms is not None and created_ms is not None and created_ms + self._absolute_ms <= now_ms:
            return None
        store_ttl = getattr(self.store, "default_ttl", None)  # a browser-session record lives that long
        if original_ms is not None and expires_ms is not None:
            last_seen_ms: Optional[float] = expires_ms - original_ms
        elif expires_ms is None and deadline_ms is not None and isinstance(store_ttl, (int, float)):
            last_seen_ms = deadline_ms - store_ttl * 1000
        else:
            last_seen_ms = None
        return SessionInfo(_sid_hash(sid), _utc(created_ms), _utc(last_seen_ms), _utc(expiry), shown)


# Adapters #################################################################################################


class SessionHandlerMixin:
    """Sessions for ``http.server``: ``class Handler(SessionHandlerMixin, BaseHTTPRequestHandler)`` with
    ``session_manager = manager``; handlers use ``self.session``.

    The session opens on first use of ``self.session``. It is committed in ``end_headers`` (so before any
    byte of the response, including ``send_error`` responses; 1xx interim responses are skipped). Every
    request is answered:

    - any exception that escapes the handler before the response started is answered with a 500 (no
      session cookie), then re-raised so the server logs it;
    - when the commit in ``end_headers`` fails, the response being built is dropped and the 500 goes out at
      once, before ``end_headers`` raises: an application that catches the error cannot leave the client
      waiting, and what it writes after that is discarded (the connection then closes).

    The 500 is ``send_internal_error``'s: a bare one unless a subclass sends its own page there.
    With keep-alive (``protocol_version = "HTTP/1.1"``) also set ``disable_nagle_algorithm = True``.
    """

    session_manager: SessionManager
    _session: Optional[Session] = None
    _session_status: int = 0
    _session_headers_sent = False

    def handle_one_request(self) -> None:
        # One handler instance serves every request of a keep-alive connection, and errors such as 414
        # are sent before parse_request: start each request afresh here.
        self._session = None
        self._session_status = 0
        self._session_headers_sent = False
        try:
            super().handle_one_request()  # type: ignore[misc]
        except Exception as exc:
            self.answer_internal_error(exc)
            raise

    @property
    def session(self) -> Session:
        session = self._session
        if session is None:
            session = self.session_manager.open_lazy(self._session_request)
            if self._session_headers_sent:  # first use after the response started: reads only
                self.session_manager.commit(session)
            session._use()
            self._session = session
        return session

    def _session_request(self) -> Tuple[List[str], bool, str]:
        headers = self.headers  # type: ignore[attr-defined]
        manager = self.session_manager
        tls = hasattr(self.connection, "getpeercert")  # type: ignore[attr-defined]
        secure = manager.is_secure(tls, headers.get("X-Forwarded-Proto") if manager.trust_proxy else None)
        return headers.get_all("Cookie") or [], secure, _request_path(self.path)  # type: ignore[attr-defined]

    def send_response_only(self, code: int, message: Optional[str] = None) -> None:
        self._session_status = code
        super().send_response_only(code, message)  # type: ignore[misc]

    def end_headers(self) -> None:
        session, status = self._session, self._session_status
        if status >= 200:
            if session is not None:
                try:
                    headers = self.session_manager.response_headers(session, status)
                except Exception as exc:
                    self.answer_internal_error(exc)
                    raise
                for name, value in headers:
                    self.send_header(name, value)  # type: ignore[attr-defined]
            self._session_headers_sent = True
        super().end_headers()  # type: ignore[misc]

    def send_internal_error(self, error: BaseException) -> None:
        """Send the 500 of a request that failed before its response started (``error`` says why; never
        show it to the client). Override it for an error page of your own: it runs without the request's
        session (``self.session`` would open a fresh one) and must send a complete response. If it raises
        before its headers are out, the bare 500 is sent instead."""
        body = b"Internal Server Error: the session could not be saved.\n" if isinstance(error, SessionError) \
            else b"Internal Server Error\n"
        self.send_response(500)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "text/plain; charset=utf-8")  # type: ignore[attr-defined]
        self.send_header("Content-Length", str(len(body)))  # type: ignore[attr-defined]
        self.send_header("Connection", "close")  # type: ignore[attr-defined]
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)  # type: ignore[attr-defined]

    def answer_internal_error(self, error: BaseException) -> None:
        """Answer a failed request with ``send_internal_error``'s 500, dropping the response being built and
        its session, and discard whatever the handler still writes; the connection closes after it. If the
        response is already out, only the connection closes. The mixin calls it for what escapes the handler;
        call it from your own ``except`` clauses so they answer too."""
        self.close_connection = True
        if self._session_headers_sent:
            return
        self._headers_buffer = []
        self._session = None
        try:
            try:
                self.send_internal_error(error)
            except Exception:
                if self._session_headers_sent:  # a custom page failed half-way: the client sees it cut short
                    raise
                self._headers_buffer = []
                self._session = None
                SessionHandlerMixin.send_internal_error(self, error)
            self.wfile.flush()  # type: ignore[attr-defined]
        except Exception as exc:  # the client is gone, or the page failed: the connection closes anyway
            log.debug("the 500 of a failed request could not be sent (%s)", type(exc).__name__)
        self._session_headers_sent = True
        self.wfile = _Discard()


class _Discard:
    """A handler's ``wfile`` once its bare 500 is out: what the application still writes goes nowhere."""

    closed = False

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _request_path(target: str) -> str:
    """The path of a request target (origin form ``/a?b`` or absolute form ``http://h/a``)."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if path.startswith("/"):
        return path
    scheme_end = path.find("://")
    if scheme_end >= 0:
        slash = path.find("/", scheme_end + 3)
        return path[slash:] if slash >= 0 else "/"
    return "/"


class SessionMiddleware:
    """Sessions for WSGI: ``app = SessionMiddleware(wsgi_app, manager)``; the app finds its session at
    ``environ["sessions.session"]`` (opened on first use).

    The session is committed inside the app's ``start_response`` call, before the server sends anything;
    a store failure raises there, so the server answers 500 (without the cookie). A second
    ``start_response`` call with ``exc_info`` (an error page replacing the response) repeats the session's
    cookie, because the store was already written. HTTPS is ``wsgi.url_scheme``, or with ``trust_proxy``
    the ``X-Forwarded-Proto`` header.
    """

    environ_key = "sessions.session"

    def __init__(self, app: Callable[..., Iterable[bytes]], manager: SessionManager) -> None:
        self.app = app
        self.manager = manager

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = _WSGIRequest(self.manager, environ, start_response)
        environ[self.environ_key] = request.session
        return self.app(environ, request.start_response)


class _WSGIRequest:
    """One WSGI request's link to its session: what the lazy session opens from, and the
    ``start_response`` that commits it. One small object rather than closures (this runs on every
    request, touched or not)."""

    __slots__ = ("environ", "server_start_response", "session")

    def __init__(self, manager: SessionManager, environ: Dict[str, Any], start_response: Callable[..., Any]) -> None:
        self.environ = environ
        self.server_start_response = start_response
        self.session = Session(manager, self)

    def __call__(self) -> Tuple[Optional[str], bool, str]:
        """What the session opens from: (Cookie header, HTTPS?, request path)."""
        return _wsgi_request(self.session._manager, self.environ)

    def start_response(self, status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Any:
        session = self.session
        if not session._accessed:  # never used: nothing to add, but commit closes it for any later use
            session._manager.commit(session)
            return self.server_start_response(status, headers, exc_info)
        try:
            code = int(status.split(" ", 1)[0])
        except ValueError:
            code = 500
        extra = session._manager.response_headers(session, code)  # a repeated call repeats the cookies
        return self.server_start_response(status, list(headers) + extra, exc_info)


def _wsgi_request(manager: SessionManager, environ: Dict[str, Any]) -> Tuple[Optional[str], bool, str]:
    """What a WSGI request's session opens from: (Cookie header, HTTPS?, request path)."""
    def text(key: str) -> str:  # a value that is not text (a broken server or middleware) counts as absent
        value = environ.get(key)
        return value if isinstance(value, str) else ""

    tls = environ.get("wsgi.url_scheme") == "https"
    secure = manager.is_secure(tls, text("HTTP_X_FORWARDED_PROTO"))
    raw = text("RAW_URI") or text("REQUEST_URI")  # as sent: what browsers path-match
    path, script = (_request_path(raw) if raw else ""), text("SCRIPT_NAME")
    # PEP 3333 only has the decoded path; it is also the browser's when a middleware mounted the app under a
    # prefix the raw URI lacks (ProxyFix's X-Forwarded-Prefix, werkzeug's test client)
    if not path or (script and not _path_matches(path, script)):
        path = script + text("PATH_INFO")
    return text("HTTP_COOKIE"), secure, path or "/"


# Framework adapters #######################################################################################
#
# Each framework already has a session API its users and extensions rely on; these adapters make our
# Session fill it. Duck typing only: importing sessions.py imports no framework (the two Django classes
# that subclass Django's are built on first lookup, see "Django"). Each adapter translates the framework's
# request into open (or open_lazy) and its response into response_headers, and nothing more.


#: The Flask settings the session reads (``SECRET_KEY_FALLBACKS`` and ``SESSION_COOKIE_PARTITIONED`` are Flask
#: 3.1's; older Flask has neither, which reads as their defaults).
_FLASK_SESSION_SETTINGS = (
    "SECRET_KEY", "SECRET_KEY_FALLBACKS", "SESSION_COOKIE_NAME", "SESSION_COOKIE_DOMAIN", "SESSION_COOKIE_PATH",
    "APPLICATION_ROOT", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_SAMESITE",
    "SESSION_COOKIE_PARTITIONED", "SESSION_REFRESH_EACH_REQUEST", "SESSION_PERMANENT", "PERMANENT_SESSION_LIFETIME",
)

_FLASK_SESSION_STORE = "choose the store with FlaskSessionInterface(store=...)"
#: Flask-Session's settings that sessions.py does not read, and what to do instead. One left in app.config is
#: a ConfigurationError (never silently ignored); its SESSION_PERMANENT is read, and SESSION_USE_SIGNER is
#: moot (the id is always signed).
_FLASK_SESSION_EXTENSION_SETTINGS = dict.fromkeys(
    ("SESSION_TYPE", "SESSION_CLEANUP_N_REQUESTS", "SESSION_REDIS", "SESSION_MEMCACHED", "SESSION_CACHELIB",
     "SESSION_FILE_DIR", "SESSION_FILE_THRESHOLD", "SESSION_FILE_MODE", "SESSION_MONGODB", "SESSION_MONGODB_DB",
     "SESSION_MONGODB_COLLECT", "SESSION_SQLALCHEMY", "SESSION_SQLALCHEMY_TABLE", "SESSION_SQLALCHEMY_SEQUENCE",
     "SESSION_SQLALCHEMY_SCHEMA", "SESSION_SQLALCHEMY_BIND_KEY", "SESSION_DYNAMODB", "SESSION_DYNAMODB_TABLE"),
    _FLASK_SESSION_STORE,
)
_FLASK_SESSION_EXTENSION_SETTINGS.update(
    SESSION_KEY_PREFIX="the key prefix is the store's (RedisStore(client, prefix=...))",
    SESSION_ID_LENGTH="ids are 32 characters of 24 random bytes (SessionManager(genid=...) makes others)",
    SESSION_SERIALIZATION_FORMAT="records are JSON, values in Flask's tagged JSON",
)


def _flask_settings(config: Any) -> Tuple[Any, ...]:
    """The session settings of a Flask app's config, as a comparable snapshot (lists copied to tuples, so a
    list changed in place still counts as a change)."""
    values = (config.get(key) for key in _FLASK_SESSION_SETTINGS)
    return tuple(tuple(value) if isinstance(value, list) else value for value in values)


def _flask_options(config: Any) -> Dict[str, Tuple[str, Any]]:
    """What Flask's own session would do with ``config``: option -> (the setting it comes from, value), each
    value read as Flask's ``SessionInterface.get_cookie_*`` and werkzeug's ``dump_cookie`` read it (a domain's
    port and leading dot dropped, ``Partitioned`` implying ``Secure``). ``name`` and ``refresh`` are the
    manager's; the rest are ``CookieOptions`` fields."""
    domain = config.get("SESSION_COOKIE_DOMAIN")
    if isinstance(domain, str):
        domain = domain.partition(":")[0].lstrip(".") or None
    path_setting = "SESSION_COOKIE_PATH" if config.get("SESSION_COOKIE_PATH") else "APPLICATION_ROOT"
    same_site = config.get("SESSION_COOKIE_SAMESITE")
    if isinstance(same_site, str):
        same_site = _SAME_SITE.get(same_site.lower(), same_site)
    partitioned = bool(config.get("SESSION_COOKIE_PARTITIONED", False))
    permanent = config.get("SESSION_PERMANENT")  # Flask-Session's: every new session permanent
    lifetime = config.get("PERMANENT_SESSION_LIFETIME", timedelta(days=31))
    return {
        "name": ("SESSION_COOKIE_NAME", config.get("SESSION_COOKIE_NAME", "session")),
        "refresh": ("SESSION_REFRESH_EACH_REQUEST", bool(config.get("SESSION_REFRESH_EACH_REQUEST", True))),
        "domain": ("SESSION_COOKIE_DOMAIN", domain),
        "path": (path_setting, config.get(path_setting) or "/"),
        "http_only": ("SESSION_COOKIE_HTTPONLY", bool(config.get("SESSION_COOKIE_HTTPONLY", True))),
        "secure": ("SESSION_COOKIE_SECURE", bool(config.get("SESSION_COOKIE_SECURE", False)) or partitioned),
        "same_site": ("SESSION_COOKIE_SAMESITE", same_site),
        "partitioned": ("SESSION_COOKIE_PARTITIONED", partitioned),
        "max_age": ("SESSION_PERMANENT", _seconds(lifetime, "PERMANENT_SESSION_LIFETIME") if permanent else None),
    }


def _check_no_flask_session_settings(config: Any) -> None:
    """ConfigurationError naming a Flask-Session setting left in ``config``, which sessions.py does not read."""
    for setting, instead in _FLASK_SESSION_EXTENSION_SETTINGS.items():
        if setting in config:
            raise ConfigurationError(
                f"app.config[{setting!r}] is Flask-Session's setting, which sessions.py does not read: {instead}; "
                "remove it (README: Migrating from Flask's session / Flask-Session)"
            )


def _flask_cookie(app: Any) -> Tuple[str, bool, Dict[str, Any]]:
    """(cookie name, refresh each request, CookieOptions fields) from ``app.config``."""
    options = {option: value for option, (_, value) in _flask_options(app.config).items()}
    return options.pop("name"), options.pop("refresh"), options


def _changed_flask_settings(app: Any) -> List[str]:
    """The session settings ``app`` changed from Flask's defaults, for error messages (never the secrets)."""
    config, defaults = app.config, getattr(app, "default_config", {})
    return [f"{key}={_shown(config.get(key))}" for key in _FLASK_SESSION_SETTINGS
            if not key.startswith("SECRET_KEY") and config.get(key) != defaults.get(key)]


def _flask_config_error(app: Any, exc: ConfigurationError) -> ConfigurationError:
    return ConfigurationError(
        f"Flask's session settings cannot be used: {exc} (app.config: {', '.join(_changed_flask_settings(app))})"
    )


class _FlaskManager(SessionManager):
    """The manager ``app.config`` gives: Flask's ``SESSION_REFRESH_EACH_REQUEST`` as its own rule. A loaded
    permanent session (one whose cookie has a lifetime) re-sends its cookie on every request that uses it,
    so an active user's cookie never expires; a browser-session cookie is sent only as the save rules say
    (``rolling`` would re-send it too, which Flask does not)."""

    def __init__(self, *args: Any, refresh_each_request: bool, **options: Any) -> None:
        super().__init__(*args, **options)
        self.refresh_each_request = refresh_each_request

    def _should_set_cookie(self, session: Session, is_new: bool, modified: bool, now_ms: int) -> bool:
        refreshed = self.refresh_each_request and not is_new and session._cookie.expires_ms is not None
        return refreshed or super()._should_set_cookie(session, is_new, modified, now_ms)


def _flask_manager(app: Any, store: Store, codec: FlaskTaggedJSON) -> Optional[SessionManager]:
    """A SessionManager configured the way Flask configures its own session, from ``app.config``, storing
    values in Flask's tagged JSON; None without a ``SECRET_KEY`` (Flask then gives the request its null
    session, which refuses writes)."""
    config = app.config
    if not config.get("SECRET_KEY"):
        return None
    secrets = [config["SECRET_KEY"], *(config.get("SECRET_KEY_FALLBACKS") or ())]  # the current key signs
    name, refresh, cookie = _flask_cookie(app)
    try:
        return _FlaskManager(
            secrets, store=store, name=name, cookie=cookie, codec=codec, refresh_each_request=refresh
        )
    except ConfigurationError as exc:
        raise _flask_config_error(app, exc) from None


def _check_flask_agrees(app: Any, manager: SessionManager) -> None:
    """ConfigurationError naming the first session setting the app changed from Flask's default that the
    explicit ``manager`` contradicts: the manager decides, and a setting is never silently ignored. The
    secrets are not compared: ``SECRET_KEY`` serves the app's other signatures too, and the manager has its
    own. ``SESSION_REFRESH_EACH_REQUEST = False`` contradicts a ``rolling`` manager (``True`` is Flask's
    default, so a manager without ``rolling`` decides that permanent cookies are not refreshed)."""
    config, defaults = app.config, getattr(app, "default_config", {})
    has = {"name": manager.name, "refresh": manager.rolling}
    for option, (setting, value) in _flask_options(config).items():
        if config.get(setting) == defaults.get(setting):
            continue
        current = has[option] if option in has else getattr(manager.cookie_options, option)
        if value != current:
            shown = {"name": "name", "refresh": "rolling"}.get(option, f"cookie {option}")
            raise ConfigurationError(
                f"app.config[{setting!r}] is {_shown(config.get(setting))}, but the session manager's {shown} "
                f"is {_shown(current)}: the manager decides; remove the setting or make the two agree"
            )


class FlaskTaggedJSON:
    """Flask's own tagged JSON (``flask.json.tag.TaggedJSONSerializer``) as a ``SessionManager`` codec, so the
    values Flask's session round-trips come back with their types: ``tuple``, ``bytes``, ``Markup``, ``UUID``,
    ``datetime`` and dicts and lists holding them. A record stays JSON any reader (an Express app) can read:
    ``(1, 2)`` is stored as ``{" t":[1,2]}``, as Flask's cookie holds it.

    ``serializer`` is Flask's serializer (by default ``flask.sessions.session_json_serializer``, the one
    Flask's own session uses, so tags an extension registered on it apply here too).

    The manager refuses at assignment (``SerializationError``) what would not come back equal and of the
    same types: a str or dict subclass other than ``Markup`` (it would come back a plain str or dict), a
    dict with keys that are not str, a naive datetime or one with microseconds (Flask's tag keeps UTC to the
    second), a whole float (JSON gives back an int), a set or any other type.
    """

    __slots__ = ("_serializer",)

    def __init__(self, serializer: Any = None) -> None:
        self._serializer = serializer

    @property
    def serializer(self) -> Any:
        if self._serializer is None:  # Flask is imported by the time an app uses its session
            self._serializer = sys.modules["flask.sessions"].session_json_serializer
        return self._serializer

    def encode(self, value: Any) -> Any:
        """The tagged, JSON-ready form of ``value`` (``{" t":[1,2]}`` for ``(1, 2)``)."""
        return self.serializer.tag(value)

    def decode(self, value: Any) -> Any:
        """``value`` (loaded JSON) with its tags turned back into Python types, innermost first (as Flask's
        ``TaggedJSONSerializer.loads`` does, through its public ``untag``)."""
        untag = self.serializer.untag
        if isinstance(value, dict):
            return untag({key: self.decode(item) for key, item in value.items()})
        if isinstance(value, list):
            return [self.decode(item) for item in value]
        return value


class _FlaskApp:
    """The session state of one Flask app: the settings it was built from and the manager they give."""

    __slots__ = ("settings", "manager")

    def __init__(self, settings: Tuple[Any, ...], manager: Optional[SessionManager]) -> None:
        self.settings, self.manager = settings, manager


class _FlaskSession(Session):
    """``flask.session``: our session plus the names Flask and its extensions use (``new``, ``accessed``,
    ``permanent``; ``modified`` is the core's). It reads its request from the WSGI environ, like the WSGI
    adapter's session, and opens on first use."""

    _flask_accessed = False

    def __init__(self, manager: SessionManager, environ: Dict[str, Any], lifetime: Seconds) -> None:
        super().__init__(manager, lambda: _wsgi_request(manager, environ))
        self._lifetime = lifetime

    @property
    def new(self) -> bool:
        """Flask's name for ``is_new``."""
        return self.is_new

    @property
    def accessed(self) -> bool:
        """Whether the request used the session: the core's ``accessed``, or Flask (3.1.3+) set it (it does
        whenever ``flask.session`` is touched). It adds ``Vary: Cookie``, as in Flask."""
        return self._flask_accessed or self._accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        self._flask_accessed = bool(value)

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser session. Mapped to the cookie's lifetime (never stored as
        a data key, which would store a session for every visitor): setting True gives a browser-session
        cookie ``app.permanent_session_lifetime`` and keeps a lifetime the cookie already has; False makes
        it a browser-session cookie."""
        return self.cookie.original_max_age is not None

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if bool(value) != self.permanent:
            self.cookie.max_age = self._lifetime if value else None

    @property
    def _emptied(self) -> bool:
        """A loaded session this request emptied: Flask deletes such a session's cookie."""
        return (self._accessed and self._status is _OPEN and self._new_reason is None
                and not len(self) and self.modified)


def _add_cache_safety(response: Any, directive: str) -> None:
    """Add ``directive`` (``no-cache="Set-Cookie"``) to the response's one Cache-Control header, unless the
    view already set one that keeps shared caches from storing the cookie (``no-store``, ``no-cache``,
    ``private``); a ``no-cache`` listing fields gets ``Set-Cookie`` added to its list."""
    control = response.cache_control  # werkzeug's parsed view of the header
    no_cache = control.no_cache
    if control.no_store or no_cache is True or control.private is True:
        return
    if isinstance(no_cache, str):
        if "set-cookie" not in no_cache.lower():
            control.no_cache = f"{no_cache}, Set-Cookie"
        return
    present = ", ".join(response.headers.getlist("Cache-Control"))
    response.headers["Cache-Control"] = f"{present}, {directive}" if present else directive


class FlaskSessionInterface:
    """Sessions for Flask: ``app.session_interface = sessions.FlaskSessionInterface(store=store)``, configured
    the Flask way, or ``FlaskSessionInterface(manager)`` where a ``SessionManager`` decides.

    Without a manager, each app gets a manager built from its ``app.config`` as Flask configures its own
    session: ``SECRET_KEY`` signs and ``SECRET_KEY_FALLBACKS`` verify (without a ``SECRET_KEY`` the request
    gets Flask's null session, whose writes raise Flask's "session is unavailable" ``RuntimeError``), the
    ``SESSION_COOKIE_*`` settings (path: ``SESSION_COOKIE_PATH``, else ``APPLICATION_ROOT``) and
    ``SESSION_REFRESH_EACH_REQUEST`` (a permanent session's cookie is re-sent on every request that uses
    the session). The settings are read on each request, as Flask does, and the
    manager rebuilt when they change (a rotated key takes effect at the next request). The store is
    ``store`` (a ``MemoryStore`` by default), shared by every app the interface serves.

    Values are stored in Flask's tagged JSON (``FlaskTaggedJSON`` over ``serializer``): ``tuple``,
    ``bytes``, ``Markup``, ``UUID`` and ``datetime`` come back with their types, and what would not come
    back the same is refused at assignment with ``SerializationError``.

    With a manager, its options decide (its ``codec`` too: give it ``codec=sessions.FlaskTaggedJSON()`` for
    Flask's types); a session setting the app changed from Flask's default that contradicts them is a
    ``ConfigurationError`` at the first request, naming the setting. So is a Flask-Session setting left in
    ``app.config`` (``SESSION_TYPE``, ...), in either form; Flask-Session's ``SESSION_PERMANENT`` is read.

    ``flask.session`` is then a ``Session`` (opened on first use: a view that never touches it costs no
    store call and sends no header; one that does gets ``Vary: Cookie`` merged into its one Vary header), so
    ``flash``/``get_flashed_messages`` work and ``flask.session.regenerate(keep_data=True)`` is there for
    logins. A loaded session the request empties (``session.clear()``) is deleted with its cookie, as Flask
    deletes an emptied session's cookie. ``PERMANENT_SESSION_LIFETIME`` is the
    lifetime ``session.permanent = True`` gives a browser-session cookie. Flask calls ``save_session`` when
    the response object is complete, before the server sends anything: the commit happens there with the
    response's status, so a 500 (an exception in the view) saves nothing new. A store failure there
    raises, and Flask answers 500 without the cookie. The hooks of Flask's ``SessionInterface`` that
    extensions call (``get_cookie_name`` and the other ``get_cookie_*``, ``get_expiration_time``,
    ``should_set_cookie``, ``is_null_session``, ``make_null_session``) answer for the session as it is.
    """

    #: Flask's flag for extensions: the session is not pickled.
    pickle_based = False

    def __init__(
        self, manager: Optional[SessionManager] = None, *, store: Optional[Store] = None, serializer: Any = None
    ) -> None:
        if manager is not None and (store is not None or serializer is not None):
            raise ConfigurationError(
                "pass either a manager or store= and serializer=, not both: the manager has its store and codec"
            )
        if manager is not None and not callable(getattr(manager, "response_headers", None)):
            raise ConfigurationError(f"manager must be a sessions.SessionManager, not a {type(manager).__name__}")
        self.manager = manager
        self.store = manager.store if manager is not None else (MemoryStore() if store is None else store)
        #: How values are stored: Flask's tagged JSON, or with a manager, the manager's codec.
        self.codec = manager.codec if manager is not None else FlaskTaggedJSON(serializer)
        self._apps: "weakref.WeakKeyDictionary[Any, _FlaskApp]" = weakref.WeakKeyDictionary()

    def manager_for(self, app: Any) -> Optional[SessionManager]:
        """The manager that serves ``app`` now: the explicit one (checked against the app's settings), or the
        one its config gives (None without a ``SECRET_KEY``). Cheap: rebuilt only when a setting changed."""
        settings = _flask_settings(app.config)
        known = self._apps.get(app)
        if known is not None and known.settings == settings:
            return known.manager
        _check_no_flask_session_settings(app.config)
        if self.manager is not None:
            _check_flask_agrees(app, self.manager)
            manager = self.manager
        else:
            manager = _flask_manager(app, self.store, self.codec)
        self._apps[app] = _FlaskApp(settings, manager)
        return manager

    # What Flask calls on every request ------------------------------------------------------------------

    def open_session(self, app: Any, request: Any) -> Optional[Session]:
        """Flask calls this when a request starts; nothing is read until the session is used. None (no
        ``SECRET_KEY``) makes Flask use ``make_null_session``."""
        manager = self.manager_for(app)
        if manager is None:
            return None
        return _FlaskSession(manager, request.environ, app.permanent_session_lifetime)

    def save_session(self, app: Any, session: Session, response: Any) -> None:
        """Commit, and merge the session's headers into the response's: the cookie, ``Vary: Cookie`` into
        its one Vary header (whenever the session was used, as Flask does), ``no-cache="Set-Cookie"`` into
        its Cache-Control. A loaded session the request emptied is destroyed and its cookie expired, as
        Flask deletes an emptied session's cookie."""
        status = response.status_code
        if status < 500 and isinstance(session, _FlaskSession) and session._emptied:
            session.destroy()
        accessed = getattr(session, "accessed", False)
        for name, value in session._manager.response_headers(session, status):
            if name == "Vary":
                response.vary.add(value)
            elif name == "Cache-Control":
                _add_cache_safety(response, value)
            else:
                response.headers.add(name, value)
        if accessed:
            response.vary.add("Cookie")

    @property
    def serializer(self) -> Any:
        """Flask's ``TaggedJSONSerializer`` the session stores values with (``flask.sessions
        .session_json_serializer`` unless ``serializer=`` says otherwise, as Flask's own session interface):
        register an extension's tags on it. None for a manager whose codec has none."""
        return getattr(self.codec, "serializer", None)

    # Flask's null session: a request without SECRET_KEY -------------------------------------------------

    @property
    def null_session_class(self) -> type:
        """Flask's own ``NullSession``: reads are empty, writes raise Flask's "session is unavailable"."""
        return sys.modules["flask.sessions"].NullSession

    def make_null_session(self, app: Any) -> Any:
        return self.null_session_class()

    def is_null_session(self, obj: object) -> bool:
        return isinstance(obj, self.null_session_class)

    # The hooks of Flask's SessionInterface that extensions call -----------------------------------------

    def _cookie(self, app: Any) -> Tuple[str, CookieOptions]:
        manager = self.manager_for(app)
        if manager is not None:
            return manager.name, manager.cookie_options
        name, _, cookie = _flask_cookie(app)  # no SECRET_KEY, no session: what its cookie would be
        try:
            return name, CookieOptions(**cookie)
        except ConfigurationError as exc:
            raise _flask_config_error(app, exc) from None

    def _cookie_options(self, app: Any) -> CookieOptions:
        return self._cookie(app)[1]

    def get_cookie_name(self, app: Any) -> str:
        return self._cookie(app)[0]

    def get_cookie_domain(self, app: Any) -> Optional[str]:
        return self._cookie_options(app).domain

    def get_cookie_path(self, app: Any) -> str:
        return self._cookie_options(app).path

    def get_cookie_httponly(self, app: Any) -> bool:
        return self._cookie_options(app).http_only

    def get_cookie_secure(self, app: Any) -> bool:
        """True when the cookie is always Secure (with ``secure="auto"`` it is Secure on HTTPS only)."""
        return self._cookie_options(app).secure is True

    def get_cookie_samesite(self, app: Any) -> Optional[str]:
        return self._cookie_options(app).same_site

    def get_cookie_partitioned(self, app: Any) -> bool:
        return self._cookie_options(app).partitioned

    def get_expiration_time(self, app: Any, session: Session) -> Optional[datetime]:
        """When the session's cookie expires (aware UTC), or None for a browser-session cookie."""
        return session.cookie.expires

    def should_set_cookie(self, app: Any, session: Session) -> bool:
        """Flask's rule: modified, or permanent while the session is refreshed on each request (``rolling``
        refreshes every loaded session)."""
        manager = session._manager
        refresh = getattr(manager, "refresh_each_request", False) and getattr(session, "permanent", False)
        return session.modified or refresh or (manager.rolling and not session.is_new)


#: Starlette ``SessionMiddleware``'s keyword arguments and defaults, which ``ASGISessionMiddleware`` accepts.
_STARLETTE_DEFAULTS: Dict[str, Any] = {
    "session_cookie": "session", "max_age": 14 * 24 * 60 * 60, "path": "/", "same_site": "lax",
    "https_only": False, "domain": None, "partitioned": False,
}


class ASGISessionMiddleware:
    """Sessions for any ASGI app (Starlette, FastAPI, ...). Pure ASGI. Either with a manager::

        app.add_middleware(sessions.ASGISessionMiddleware, manager=manager)

    or as a drop-in for Starlette's ``SessionMiddleware``, with its keyword arguments, meanings and
    defaults, plus ``store=`` (default ``MemoryStore()``)::

        app.add_middleware(sessions.ASGISessionMiddleware, secret_key="...", store=store)

    ``secret_key`` (str, Starlette's ``Secret``, bytes, or a list: the first signs, all verify) signs the
    session id; ``session_cookie`` ("session") names the cookie; ``max_age`` (14 days; None: a cookie that
    ends with the browser session, its record kept for the store's default TTL; 0: nothing outlives the
    response, as in Starlette) is the idle lifetime, restarted by every request that uses the session;
    ``path``, ``domain``, ``same_site`` ("lax"), ``https_only`` (the Secure attribute; such a cookie is only
    sent over HTTPS, see ``trust_proxy``) and ``partitioned`` set the cookie. The cookie is HttpOnly, as
    Starlette's. With ``manager=``, the manager decides, and any Starlette argument given too is a
    ``ConfigurationError`` (never silently ignored).

    The session is ``scope["session"]``, a ``dict``, so Starlette's and FastAPI's ``request.session`` work,
    ``JSONResponse(request.session)`` included. When the request carries the session cookie the session is
    read before the app runs (for a blocking store in a worker thread, ``asyncio.to_thread``); without it,
    the session is new and starts on first use. A session the app never uses costs no store write, no
    touch and no header. It is committed when the response starts (``http.response.start``, or
    ``websocket.accept`` for a websocket, which reads the session of its handshake), and its headers are
    added to that message; an app that fails before starting its response commits nothing (the server or
    Starlette answers 500).

    The event loop never waits on store I/O at open or commit: an ``AsyncStore`` is awaited; a sync store
    whose ``blocking`` attribute is true (the default of ``Store``) is called in a worker thread; a
    non-blocking one (``MemoryStore``) inline. An async endpoint calls the session methods that reach the
    store at once as ``await session.asave()``, ``areload()``, ``adestroy()``, ``aflush()`` (the same rule);
    their sync twins call a sync store where they are called, and refuse an async store. HTTPS is ``scope["scheme"]`` or, with ``trust_proxy``, ``X-Forwarded-Proto``.
    Other scopes (``lifespan``) pass through untouched.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        manager: Optional[SessionManager] = None,
        *,
        secret_key: Any = None,
        store: Optional[Store] = None,
        **starlette: Any,
    ) -> None:
        self.app = app
        if manager is not None and not isinstance(manager, SessionManager):  # Starlette's order: (app, secret_key)
            manager, secret_key = None, manager
        self.manager = manager if manager is not None else _starlette_manager(secret_key, store, starlette)
        if manager is not None:
            given = [name for name, value in (("secret_key", secret_key), ("store", store)) if value is not None]
            given += list(starlette)
            if given:
                raise ConfigurationError(
                    f"ASGISessionMiddleware takes manager= or Starlette's arguments, not both: {given[0]} was "
                    "given with a manager, which decides every setting; set it on the manager instead"
                )

    async def __call__(self, scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = _asgi_request(self.manager, scope)
        # the lambda holds the request, not the scope, which will hold the session
        session = self.manager.open_lazy(lambda: request)
        if parse_cookie_header(request[0], self.manager.name):  # a session to read: read it up front
            await session._apreload()
        scope["session"] = session

        async def send_with_session(message: Dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.accept":
                status = message.get("status", 101)  # websocket.accept: the handshake's 101 response
                headers = await self.manager.aresponse_headers(session, status)
                if headers:
                    message = dict(message)
                    message["headers"] = list(message.get("headers") or ()) + [
                        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
                    ]
            await send(message)

        await self.app(scope, receive, send_with_session)


def _starlette_manager(secret_key: Any, store: Optional[Store], options: Dict[str, Any]) -> SessionManager:
    """The manager Starlette's ``SessionMiddleware(secret_key=..., **options)`` describes, over ``store``."""
    unknown = sorted(set(options) - set(_STARLETTE_DEFAULTS))
    if unknown:
        raise ConfigurationError(
            f"ASGISessionMiddleware got an unknown argument {unknown[0]!r}; it takes manager=, or Starlette "
            f"SessionMiddleware's secret_key, {', '.join(_STARLETTE_DEFAULTS)}, and store="
        )
    if secret_key is None:
        raise ConfigurationError("ASGISessionMiddleware needs manager= or secret_key= (as Starlette's SessionMiddleware)")
    if not isinstance(secret_key, (str, bytes, list, tuple)):  # starlette.datastructures.Secret
        secret_key = str(secret_key)
    settings = {**_STARLETTE_DEFAULTS, **options}
    if not isinstance(settings["https_only"], bool):
        raise ConfigurationError(f"https_only must be True or False, not {_shown(settings['https_only'])}")
    cookie = CookieOptions(
        path=settings["path"], domain=settings["domain"], max_age=settings["max_age"], http_only=True,
        secure=settings["https_only"], same_site=settings["same_site"], partitioned=settings["partitioned"],
    )
    return SessionManager(secret_key, store=store, name=settings["session_cookie"], cookie=cookie)


def _asgi_request(manager: SessionManager, scope: Dict[str, Any]) -> Tuple[List[str], bool, str]:
    """``(cookie headers, secure, path)`` of an ASGI http or websocket scope."""
    cookies: List[str] = []
    forwarded = None
    for name, value in scope.get("headers") or ():
        name = name.lower()
        if name == b"cookie":
            cookies.append(value.decode("latin-1"))
        elif name == b"x-forwarded-proto" and forwarded is None:
            forwarded = value.decode("latin-1")
    secure = manager.is_secure(scope.get("scheme") in ("https", "wss"), forwarded)
    raw = scope.get("raw_path")  # as sent, without the query string: what browsers path-match
    path = raw.decode("latin-1") if raw else (scope.get("root_path") or "") + (scope.get("path") or "")
    return cookies, secure, path or "/"


# Django ###################################################################################################
#
# A Django project switches by settings alone (README "Django"): the middleware, a session engine for
# ``SESSION_ENGINE`` (Django's test client and ``SessionStore(key)`` code build sessions through it), an app
# whose system checks report what cannot apply, and a manager built from Django's ``SESSION_*`` settings
# unless one is named. Nothing here imports Django when sessions.py is imported: the settings are read
# through ``sys.modules`` (Django has loaded them by the time any of this runs), and the two classes that
# must subclass Django's own (the middleware, for the admin's check ``admin.E410``; the app config) are
# built on first access by the module's ``__getattr__``.

def _django_settings() -> Any:
    return sys.modules["django.conf"].settings


def _django_key_request(manager: SessionManager, key: Any) -> Tuple[Optional[str], bool, str]:
    """What the session a ``session_key`` names opens from: the key is the session cookie's value, verified
    as a browser's would be, so an unsigned id is never accepted; a key that could not be a cookie value
    (it would smuggle a second cookie into the header) counts as none. Secure: the cookie is accepted
    whatever its attributes (Django's test client has no TLS)."""
    usable = isinstance(key, str) and key and not any(c in key for c in ';,"\\ \t\r\n')
    return (f"{manager.name}={key}" if usable else None), True, manager.cookie_options.path


def _django_open_key(manager: SessionManager, key: Any) -> Session:
    """The session a ``session_key`` names (a new one if it names none)."""
    return manager.open(*_django_key_request(manager, key))


class _DjangoSession(Session):
    """``request.session`` for Django: our session with Django's ``SessionBase`` API, sync and async, so
    that ``django.contrib.auth`` (``login``/``alogin``: ``cycle_key``, ``flush``; ``request.auser()``),
    messages, CSRF (``CSRF_USE_SESSIONS``), the admin, Django's test client and views work unchanged.

    ``session_key`` is the signed cookie value (``s%3A<id>.<signature>``, what the browser holds), not the
    bare id: Django's test client puts ``session_key`` in its cookie jar and builds
    ``SessionStore(session_key)``, and both then pass the same signature check as a browser's cookie.
    ``id`` is the id the store knows.

    Differences from Django's backends, all from the model sessions.py shares with express-session: the
    expiry slides on every request that uses the session (Django's only when it is saved); ``set_expiry``
    with a datetime or timedelta sets the lifetime to the time left, which then slides too;
    ``save(must_create=True)`` needs no retry (a new id is always fresh); writes after ``delete()`` raise
    ``SessionClosedError`` (Django's backends raise ``UpdateError`` at save)."""

    __slots__ = ()
    TEST_COOKIE_NAME = "testcookie"  # Django's names
    TEST_COOKIE_VALUE = "worked"

    def __bool__(self) -> bool:
        """Always true, like Django's ``SessionBase`` (which has no length): Django's test client asks
        ``if self.session:`` to mean "is there one"."""
        return True

    # State and keys (``accessed`` and ``modified`` are the core's, with Django's meaning)
    @property
    def session_key(self) -> Optional[str]:
        """The signed cookie value, once the store may hold the session (loaded, saved, or stored by
        ``cycle_key``/``create``); None for a new session until then and after ``flush()``, like Django."""
        sid = self.id  # opens the session first
        if not self._may_be_stored:
            return None
        return _encode_signed("s:" + _sign(sid, self._manager._keys[0]))

    def is_empty(self) -> bool:
        """No ``session_key`` and no data (Django's test for "delete the browser's cookie")."""
        return self.session_key is None and not len(self)

    def has_key(self, key: str) -> bool:
        return key in self

    def exists(self, session_key: str) -> bool:
        """Whether ``session_key`` names a live session in the store."""
        return not _django_open_key(self._manager, session_key).is_new

    def load(self) -> Dict[str, Any]:
        """The data the store holds for this session now, as a new dict ({} if none); the session itself
        is left as it is (Django's ``load``)."""
        stored = _django_open_key(self._manager, self.session_key)
        return {} if stored.is_new else dict(stored)

    def save(self, must_create: bool = False) -> None:
        """Write the session to the store now; ``session_key`` is set from then on. ``must_create`` is
        Django's signature: a new session's id is fresh already."""
        super().save()

    def create(self) -> None:
        """Move the session to a new id and store it now, data kept (Django's ``create``, which
        ``cycle_key`` calls); a record under the old id is deleted."""
        self.regenerate(keep_data=True)
        super().save()

    def cycle_key(self) -> None:
        """A new id, data kept, stored now like Django's (``auth.login`` calls it against session fixation)."""
        self.create()

    def delete(self, session_key: Optional[str] = None) -> None:
        """Delete a session's record now: this one's (``destroy()``: the response expires the browser's
        cookie), or the one ``session_key`` names."""
        if session_key is None or session_key == self.session_key:
            self.destroy()
            return
        other = _django_open_key(self._manager, session_key)
        if not other.is_new:
            other.destroy()

    # The test cookie
    def set_test_cookie(self) -> None:
        self[self.TEST_COOKIE_NAME] = self.TEST_COOKIE_VALUE

    def test_cookie_worked(self) -> bool:
        return self.get(self.TEST_COOKIE_NAME) == self.TEST_COOKIE_VALUE

    def delete_test_cookie(self) -> None:
        del self[self.TEST_COOKIE_NAME]

    # Expiry: the session cookie's lifetime, which the record shares
    def get_session_cookie_age(self) -> int:
        """The default lifetime in seconds: the manager's cookie ``max_age``, or ``SESSION_COOKIE_AGE`` for
        browser-session cookies (the record then lives by the store's ``default_ttl``)."""
        max_age = self._manager.cookie_options.max_age
        return _django_settings().SESSION_COOKIE_AGE if max_age is None else round(max_age)

    def set_expiry(self, value: Union[int, float, timedelta, datetime, None]) -> None:
        """Django's ``set_expiry``: seconds of inactivity (0: until the browser closes), a timedelta or an
        aware datetime (the time left, from now, sliding afterwards), or None for the default lifetime."""
        if isinstance(value, datetime):
            value = max(0.0, value.timestamp() - self._manager.clock())
        elif value == 0:
            value = None
        elif value is None:
            value = self._manager.cookie_options.max_age
        self.cookie.max_age = value

    def get_expiry_age(self, **kwargs: Any) -> int:
        """Seconds the session lives after this request: its lifetime, or ``get_session_cookie_age()`` for
        a browser-session cookie (Django's). Django's ``modification`` and ``expiry`` keyword arguments
        compute it from those instead."""
        if "expiry" in kwargs:
            return _django_expiry_age(kwargs["expiry"], kwargs.get("modification") or self._now(),
                                      self.get_session_cookie_age())
        original = self.cookie.original_max_age
        return self.get_session_cookie_age() if original is None else round(original)

    def get_expiry_date(self, **kwargs: Any) -> datetime:
        """When the session expires (aware UTC), ``get_expiry_age()`` from now, like Django's; with
        ``modification`` and ``expiry`` from those."""
        if isinstance(kwargs.get("expiry"), (datetime, str)):
            expiry = kwargs["expiry"]
            return datetime.fromisoformat(expiry) if isinstance(expiry, str) else expiry
        modification = kwargs.get("modification") or self._now()
        return modification + timedelta(seconds=self.get_expiry_age(**kwargs))

    def get_expire_at_browser_close(self) -> bool:
        return self.cookie.original_max_age is None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._manager.clock(), timezone.utc)

    # Async: Django's a<name> methods. What calls the store goes through the core's async methods, which
    # await an AsyncStore, call MemoryStore inline and a blocking store in a worker thread: never on the loop.
    async def _aopened(self) -> None:
        """Opened (cookie verified, record loaded) and in use, without the event loop waiting on a store."""
        await self._apreload()
        self._use()

    async def aexists(self, session_key: str) -> bool:
        """Django's ``aexists``: ``exists`` for async code."""
        return not (await self._manager.aopen(*_django_key_request(self._manager, session_key))).is_new

    async def aload(self) -> Dict[str, Any]:
        """Django's ``aload``: ``load`` for async code."""
        await self._aopened()
        stored = await self._manager.aopen(*_django_key_request(self._manager, self.session_key))
        return {} if stored.is_new else dict(stored)

    async def asave(self, must_create: bool = False) -> None:
        """Django's ``asave``: ``save`` for async code."""
        await self._aopened()
        await super().asave()

    async def acreate(self) -> None:
        """Django's ``acreate``: ``create`` for async code."""
        await self._aopened()
        self.regenerate(keep_data=True)
        await super().asave()

    async def acycle_key(self) -> None:
        """Django's ``acycle_key``: ``cycle_key`` for async code (``alogin`` calls it)."""
        await self.acreate()

    async def adelete(self, session_key: Optional[str] = None) -> None:
        """Django's ``adelete``: ``delete`` for async code."""
        await self._aopened()
        if session_key is None or session_key == self.session_key:
            await self.adestroy()
            return
        other = await self._manager.aopen(*_django_key_request(self._manager, session_key))
        if not other.is_new:
            await other.adestroy()

    async def aflush(self) -> None:
        """Django's ``aflush``: ``flush`` for async code (``alogout`` calls it)."""
        await self._aopened()
        await super().aflush()


def _django_expiry_age(expiry: Any, modification: datetime, default: int) -> int:
    """Django's ``get_expiry_age(modification=..., expiry=...)``: seconds from ``modification``."""
    if not expiry:
        return default
    if isinstance(expiry, str):
        expiry = datetime.fromisoformat(expiry)
    if not isinstance(expiry, datetime):
        return expiry
    delta = expiry - modification
    return delta.days * 86400 + delta.seconds


def _after_opening(name: str, method_name: Optional[str] = None) -> Callable[..., Any]:
    """The async twin ``a<name>`` of a method that uses only opened data: it opens the session off the
    loop, then runs inline."""
    async def method(self: _DjangoSession, *args: Any, **kwargs: Any) -> Any:
        await self._aopened()
        return getattr(self, method_name or name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = "a" + name
    method.__doc__ = f"Django's ``a{name}``: ``{name}`` for async code."
    return method


for _name in ("get", "pop", "setdefault", "update", "has_key", "keys", "values", "items", "clear",
              "set_test_cookie", "test_cookie_worked", "delete_test_cookie", "set_expiry", "get_expiry_age",
              "get_expiry_date", "get_expire_at_browser_close"):
    setattr(_DjangoSession, "a" + _name, _after_opening(_name))
_DjangoSession.aset = _after_opening("set", "__setitem__")  # type: ignore[attr-defined]
del _name


class SessionStore(_DjangoSession):
    """Django's session engine interface: with ``SESSION_ENGINE = "sessions"``, Django's test client
    (``login``, ``force_login``, ``logout``, ``client.session``) and code that calls
    ``SessionStore(session_key)`` get sessions.py sessions in the project's store, the ones
    ``DjangoSessionMiddleware`` serves. ``session_key`` is a session cookie's value; one that does not
    verify (or names no live session) gives a new, empty session, like Django's backends."""

    __slots__ = ()

    def __init__(self, session_key: Optional[str] = None) -> None:
        manager = _django_manager()
        request = _django_key_request(manager, session_key)
        super().__init__(manager, lambda: request)

    @classmethod
    def clear_expired(cls) -> None:
        """Delete expired records (Django's ``clearsessions``): ``prune()`` for stores that have it; others
        (Redis) expire records themselves."""
        prune = getattr(_django_manager().store, "prune", None)
        if prune is not None:
            prune()

    @classmethod
    async def aclear_expired(cls) -> None:
        import asyncio

        await asyncio.to_thread(cls.clear_expired)


def _django_request(manager: SessionManager, request: Any) -> Callable[[], Tuple[Optional[str], bool, str]]:
    """What a Django request's session opens from. ``request.META`` is the WSGI environ (or ASGI's
    equivalent); HTTPS is also what ``request.is_secure()`` says (``SECURE_PROXY_SSL_HEADER``)."""
    environ, tls = request.META, request.is_secure()  # not the request: it will hold the session

    def opening() -> Tuple[Optional[str], bool, str]:
        cookie, secure, path = _wsgi_request(manager, environ)
        return cookie, secure or tls, path

    return opening


class _DjangoSessionMiddleware:
    """Sessions for Django, in place of ``django.contrib.sessions.middleware.SessionMiddleware`` in
    ``MIDDLEWARE`` (same place: before auth and messages). It is a subclass of Django's, so the admin's
    check finds it and Django's sync/async handling (``MiddlewareMixin``) runs it; Django is imported
    only when ``sessions.DjangoSessionMiddleware`` is first looked up.

    ``request.session`` opens on first use (with ``SESSION_SAVE_EVERY_REQUEST``, at the latest when the
    response comes back, as Django's is saved then). The commit runs when the response comes back through
    this middleware, before Django sends anything; a 5xx response (an exception in the view has become one
    by then) stores nothing new. The cookie is set and deleted through ``response.set_cookie`` /
    ``response.delete_cookie`` (so ``response.cookies``, the test client and outer middleware see it),
    ``Vary: Cookie`` is merged the way Django's ``patch_vary_headers`` does and ``Cache-Control:
    no-cache="Set-Cookie"`` the way ``patch_cache_control`` does. Django's rule for an emptied session
    decides when the cookie is deleted: when the request sent one and the session ends up neither stored
    nor holding data (after ``flush()``, or a cookie that named nothing the store holds), and never when
    the request sent none. A store failure raises from here, which Django turns into a 500 without the
    cookie.
    """

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        super().__init__(get_response)  # type: ignore[call-arg]  # Django's: sync/async detection
        errors = [message for level, _, message in _django_problems() if level == "error"]
        if errors:
            raise ConfigurationError("sessions.DjangoSessionMiddleware: " + " ".join(errors))
        self.manager = _django_manager()
        self.save_every_request = bool(_django_settings().SESSION_SAVE_EVERY_REQUEST)

    def process_request(self, request: Any) -> None:
        request.session = _DjangoSession(self.manager, _django_request(self.manager, request))

    def process_response(self, request: Any, response: Any) -> Any:
        session = getattr(request, "session", None)
        if not isinstance(session, _DjangoSession):  # replaced, or a response from before process_request
            return response
        status = response.status_code
        if self._saved_every_request(session, status):
            len(session)  # opened, so that the commit writes it and sends its cookie
        return self._respond(request, response, session, self.manager.response_headers(session, status))

    async def __acall__(self, request: Any) -> Any:
        """Under ASGI: as ``MiddlewareMixin`` runs it, but the commit goes through the core's async path
        (an ``AsyncStore`` awaited on the loop, a blocking store in a worker thread) instead of a thread
        for the whole of ``process_response``."""
        self.process_request(request)  # builds a lazy session: no store call
        if self.manager.name in request.COOKIES:  # read it now, awaited: sync code (CSRF, auth) reads it later
            await request.session._apreload()
        response = await self.get_response(request)
        session = getattr(request, "session", None)
        if not isinstance(session, _DjangoSession):
            return response
        status = response.status_code
        if self._saved_every_request(session, status):
            await session._aopened()
        return self._respond(request, response, session, await self.manager.aresponse_headers(session, status))

    def _saved_every_request(self, session: _DjangoSession, status: int) -> bool:
        return self.save_every_request and status < 500 and not session.closed

    def _respond(self, request: Any, response: Any, session: _DjangoSession, headers: List[Tuple[str, str]]) -> Any:
        """The response with the session's headers, by Django's rules for its session cookie."""
        cookie = next((value for name, value in headers if name == "Set-Cookie"), None)  # one at most
        if self.manager.name not in request.COOKIES:
            if cookie is not None and _django_clearing(cookie):  # nothing to delete: Django sends no cookie
                headers = [(name, value) for name, value in headers if name == "Vary"]
        elif cookie is None and _django_emptied(session):  # Django deletes the cookie of an emptied session
            headers += [("Set-Cookie", self.manager._clearing_cookie(session)),
                        ("Cache-Control", 'no-cache="Set-Cookie"')]
        for name, value in headers:
            _DJANGO_HEADERS[name](response, value)
        return response


def _django_emptied(session: _DjangoSession) -> bool:
    """Used, not stored, and empty: Django's ``is_empty()`` after use (a cookie that named nothing)."""
    # emptiness first: session_key signs the id (an HMAC), which a session holding data never needs here
    return session.accessed and session.new_reason != "out-of-scope" and not len(session) \
        and session.session_key is None


def _django_cookie_parts(set_cookie: str) -> Tuple[str, str, Dict[str, Any]]:
    """A Set-Cookie value of ``SessionManager.commit``: name, value, attributes (lower-cased names; flags True)."""
    pair, *parts = set_cookie.split("; ")
    name, _, value = pair.partition("=")
    attributes: Dict[str, Any] = {}
    for part in parts:
        key, _, argument = part.partition("=")
        attributes[key.lower()] = argument or True
    return name, value, attributes


def _django_clearing(set_cookie: str) -> bool:
    """Whether a Set-Cookie value of ``SessionManager.commit`` expires the browser's cookie."""
    _, value, attributes = _django_cookie_parts(set_cookie)
    return not value and attributes.get("max-age") == "0"


def _django_set_cookie(response: Any, set_cookie: str) -> None:
    """A Set-Cookie value from ``SessionManager.commit`` through ``response.set_cookie`` (or
    ``delete_cookie`` for the value that expires the cookie), attributes as the manager chose them."""
    name, value, attributes = _django_cookie_parts(set_cookie)
    path, domain, same_site = attributes["path"], attributes.get("domain"), attributes.get("samesite")
    if _django_clearing(set_cookie):
        response.delete_cookie(name, path=path, domain=domain, samesite=same_site)
    else:
        max_age = attributes.get("max-age")
        response.set_cookie(name, value, max_age=None if max_age is None else int(max_age),
                            expires=attributes.get("expires"), path=path, domain=domain, samesite=same_site)
    morsel = response.cookies[name]
    morsel["httponly"] = attributes.get("httponly", "")
    morsel["secure"] = attributes.get("secure", "")


def _django_header_cache_control(response: Any, value: str) -> None:
    """Merge Cache-Control directives the way Django's ``patch_cache_control`` does."""
    directives = {}
    for directive in value.split(","):
        key, _, argument = directive.strip().partition("=")
        directives[key.replace("-", "_")] = argument or True  # quoted as it comes: no-cache="Set-Cookie"
    sys.modules["django.utils.cache"].patch_cache_control(response, **directives)


def _django_header_vary(response: Any, value: str) -> None:
    """Merge into the one Vary header the way Django's ``patch_vary_headers`` does."""
    sys.modules["django.utils.cache"].patch_vary_headers(response, [field.strip() for field in value.split(",")])


_DJANGO_HEADERS = {"Set-Cookie": _django_set_cookie, "Cache-Control": _django_header_cache_control,
                   "Vary": _django_header_vary}


# Django: the manager, from the settings ------------------------------------------------------------------

#: The settings that name what sessions.py uses: a manager (all options its own), or a store (the manager
#: is then built from Django's settings); neither: one MemoryStore per process.
_DJANGO_MANAGER_SETTING = "SESSIONS_PY_MANAGER"
_DJANGO_STORE_SETTING = "SESSIONS_PY_STORE"
#: Django's settings that are the manager's options (README "Django" has the table).
_DJANGO_SESSION_SETTINGS = (
    "SESSION_COOKIE_NAME", "SESSION_COOKIE_AGE", "SESSION_EXPIRE_AT_BROWSER_CLOSE", "SESSION_COOKIE_DOMAIN",
    "SESSION_COOKIE_PATH", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_SAMESITE",
    "SESSION_SAVE_EVERY_REQUEST",
)
#: Settings of Django's own engines, which mean nothing to sessions.py: changing them is a warning.
_DJANGO_ENGINE_ONLY_SETTINGS = ("SESSION_CACHE_ALIAS", "SESSION_FILE_PATH")
_DJANGO_ENGINE = __name__  # SESSION_ENGINE: this module ("sessions"), whose SessionStore Django imports

_django_managers: Dict[Tuple[Any, ...], SessionManager] = {}  # managers built from settings, by their options
_django_default_store: List[Store] = []  # the process's MemoryStore, when no store is named


def _django_named(setting: str, value: Any) -> Any:
    """The object a setting holds, or that its dotted path names."""
    if isinstance(value, str) and "." in value:
        module, _, attribute = value.rpartition(".")
        try:
            value = getattr(importlib.import_module(module), attribute, None)
        except ImportError as exc:
            raise ConfigurationError(f"settings.{setting}: cannot import {module!r} ({exc})") from exc
    return value


def _django_manager() -> SessionManager:
    """The project's manager: ``SESSIONS_PY_MANAGER``, or one built from Django's settings around
    ``SESSIONS_PY_STORE``. Built once per set of settings values (``override_settings`` gets its own), so the
    middleware and ``SessionStore`` share it, and its store."""
    settings = _django_settings()
    explicit = getattr(settings, _DJANGO_MANAGER_SETTING, None)
    if explicit is not None:
        manager = _django_named(_DJANGO_MANAGER_SETTING, explicit)
        if not callable(getattr(manager, "response_headers", None)):  # the type only: it might be a secret
            raise ConfigurationError(
                f"settings.{_DJANGO_MANAGER_SETTING} must be a sessions.SessionManager or the dotted path of one, "
                f"e.g. 'mysite.sessions.manager'; got a {type(manager).__name__}"
            )
        return manager
    options = _django_options(settings)
    options["store"] = _django_store(settings)
    key = tuple((name, id(value) if name == "store" else value) for name, value in options.items())
    manager = _django_managers.get(key)
    if manager is None:
        manager = _django_managers[key] = SessionManager(**options)
    return manager


def _django_store(settings: Any) -> Store:
    value = getattr(settings, _DJANGO_STORE_SETTING, None)
    if value is None:
        if not _django_default_store:
            _django_default_store.append(MemoryStore(default_ttl=settings.SESSION_COOKIE_AGE))
        return _django_default_store[0]
    store = _django_named(_DJANGO_STORE_SETTING, value)
    if not all(callable(getattr(store, method, None)) for method in ("get", "set", "touch", "destroy")):
        raise ConfigurationError(
            f"settings.{_DJANGO_STORE_SETTING} must be a sessions.Store or the dotted path of one, "
            f"e.g. 'mysite.sessions.store'; got a {type(store).__name__}"
        )
    return store


def _django_options(settings: Any) -> Dict[str, Any]:
    """``SessionManager`` options (all but the store) from Django's settings."""
    same_site = settings.SESSION_COOKIE_SAMESITE
    cookie = CookieOptions(
        path=settings.SESSION_COOKIE_PATH,
        domain=settings.SESSION_COOKIE_DOMAIN,
        max_age=None if settings.SESSION_EXPIRE_AT_BROWSER_CLOSE else settings.SESSION_COOKIE_AGE,
        http_only=bool(settings.SESSION_COOKIE_HTTPONLY),
        secure=bool(settings.SESSION_COOKIE_SECURE),
        same_site=same_site or None,  # Django's False (or None): no SameSite attribute
    )
    every_request = bool(settings.SESSION_SAVE_EVERY_REQUEST)
    return {
        "secret": (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())),
        "name": settings.SESSION_COOKIE_NAME,
        "cookie": cookie,
        "resave": every_request,  # the record is written...
        "rolling": every_request,  # ...and the cookie sent again, on every request
    }


def _django_view(manager: SessionManager) -> Dict[str, Any]:
    """A manager's options as the values of Django's settings, to compare with them."""
    cookie = manager.cookie_options
    return {
        "SESSION_COOKIE_NAME": manager.name,
        "SESSION_COOKIE_AGE": cookie.max_age,
        "SESSION_EXPIRE_AT_BROWSER_CLOSE": cookie.max_age is None,
        "SESSION_COOKIE_DOMAIN": cookie.domain,
        "SESSION_COOKIE_PATH": cookie.path,
        "SESSION_COOKIE_HTTPONLY": cookie.http_only,
        "SESSION_COOKIE_SECURE": cookie.secure,
        "SESSION_COOKIE_SAMESITE": cookie.same_site,
        "SESSION_SAVE_EVERY_REQUEST": manager.resave and manager.rolling,
    }


def _django_problems() -> List[Tuple[str, str, str]]:
    """What keeps the settings from applying as written: ``(level, id, message)`` with level "error" or
    "warning". The app's system check reports them; the middleware refuses to start on an error."""
    settings = _django_settings()
    defaults = sys.modules["django.conf"].global_settings
    problems: List[Tuple[str, str, str]] = []

    def changed(setting: str) -> bool:
        return getattr(settings, setting, None) != getattr(defaults, setting, None)

    if settings.SESSION_ENGINE != _DJANGO_ENGINE:
        problems.append(("error", "E001", (
            f"settings.SESSION_ENGINE is {settings.SESSION_ENGINE!r}; set it to {_DJANGO_ENGINE!r} so that Django's "
            "test client and SessionStore(session_key) use sessions.py's sessions, which the middleware accepts."
        )))
    if changed("SESSION_SERIALIZER"):
        problems.append(("error", "E002", (
            "settings.SESSION_SERIALIZER is changed, but sessions.py stores JSON (express-session's record "
            "format); remove the setting."
        )))
    for setting in _DJANGO_ENGINE_ONLY_SETTINGS:
        if changed(setting):
            message = f"settings.{setting} is for Django's own engines: sessions.py ignores it."
            problems.append(("warning", "W001", message))
    if all(getattr(settings, name, None) is not None for name in (_DJANGO_MANAGER_SETTING, _DJANGO_STORE_SETTING)):
        problems.append(("error", "E003", (
            f"settings.{_DJANGO_MANAGER_SETTING} and settings.{_DJANGO_STORE_SETTING} are both set; name the store "
            "in the manager, or drop the manager to build it from Django's settings."
        )))
        return problems
    try:
        manager = _django_manager()
        from_settings = SessionManager(**_django_options(settings))
    except SessionError as exc:
        problems.append(("error", "E004", f"the session settings are invalid: {exc}"))
        return problems
    options = manager.cookie_options
    if options.partitioned or options.priority:
        problems.append(("error", "E005", (
            f"settings.{_DJANGO_MANAGER_SETTING} has cookie partitioned or priority, which Django's "
            "response.set_cookie cannot send; remove them."
        )))
    ours, theirs = _django_view(manager), _django_view(from_settings)
    for setting in _DJANGO_SESSION_SETTINGS:
        if changed(setting) and ours[setting] != theirs[setting]:
            problems.append(("error", "E010", (
                f"settings.{setting} is {getattr(settings, setting)!r}, but settings.{_DJANGO_MANAGER_SETTING} "
                f"has {ours[setting]!r} for it; make them agree (or remove the setting)."
            )))
    return problems


def _django_check(app_configs: Any = None, **kwargs: Any) -> List[Any]:
    """The system check: ``_django_problems`` as Django's check messages, ids ``sessions_py.E001``..."""
    checks = sys.modules["django.core.checks"]
    kinds = {"error": checks.Error, "warning": checks.Warning}
    return [kinds[level](message, id=f"sessions_py.{code}") for level, code, message in _django_problems()]


class _DjangoSessionsConfig:
    """The app that runs sessions.py's system checks: ``"sessions.DjangoSessionsConfig"`` in
    ``INSTALLED_APPS`` (no models, no tables). A subclass of Django's ``AppConfig``, built on first lookup."""

    name = __name__
    label = "sessions_py"
    verbose_name = "sessions.py"

    def ready(self) -> None:
        sys.modules["django.core.checks"].register(_django_check, "sessions")


def _django_class(name: str, ours: type, module: str, base: str) -> type:
    """``ours`` as a subclass of Django's ``base`` (imported now), published as ``sessions.<name>``."""
    django_base = getattr(importlib.import_module(module), base)
    attributes = {"__module__": __name__, "__qualname__": name, "__doc__": ours.__doc__}
    return type(name, (ours, django_base), attributes)


_DJANGO_LAZY = {
    "DjangoSessionMiddleware": lambda: _django_class(
        "DjangoSessionMiddleware", _DjangoSessionMiddleware, "django.contrib.sessions.middleware", "SessionMiddleware"),
    "DjangoSessionsConfig": lambda: _django_class(
        "DjangoSessionsConfig", _DjangoSessionsConfig, "django.apps", "AppConfig"),
}


def __getattr__(name: str) -> Any:
    """``DjangoSessionMiddleware`` and ``DjangoSessionsConfig``, built on first lookup (PEP 562): they
    subclass Django's classes, and importing sessions.py must not import Django."""
    build = _DJANGO_LAZY.get(name)
    if build is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = build()
    return value


# Operations CLI ###########################################################################################

_CLI_EPILOG = """\
STORE is sqlite:PATH, redis://... (or rediss://...), or postgresql://...; only the client package of the
store named is imported (redis for Redis, psycopg for PostgreSQL).

commands:
  count                  print the number of live sessions
  prune                  delete expired sessions now, print how many (Redis expires them itself: 0)
  sessions-of OWNER      one line per live session of OWNER: handle, created, last seen, expires (UTC)
  end-sessions-of OWNER  end every session of OWNER, print how many ended
  end HANDLE             end the session with that handle (searches every session: O(sessions))

Exit status: 0 done, 1 nothing found or the store failed, 2 usage. Session ids and secrets are never
printed: a session appears as its handle, the tag of its lines in the log.
"""


def _cli_store(spec: str, table: Optional[str], prefix: Optional[str]) -> Optional[Store]:
    """The store a CLI argument names; None when it names none (a usage error)."""
    if spec.startswith("sqlite:"):
        path = spec[len("sqlite:"):]
        if not os.path.isfile(path):  # the store would create it: a typo must not make an empty database
            raise FileNotFoundError("no such SQLite file")
        return SQLiteStore(path, **({} if table is None else {"table": table}))
    if spec.startswith(("redis://", "rediss://")):
        redis = importlib.import_module("redis")
        client = redis.Redis.from_url(spec, socket_timeout=10, socket_connect_timeout=10)
        return RedisStore(client, **({} if prefix is None else {"prefix": prefix}))
    if spec.startswith(("postgresql://", "postgres://")):
        psycopg = importlib.import_module("psycopg")
        return PostgresStore(lambda: psycopg.connect(spec), **({} if table is None else {"table": table}))
    return None


def _cli_time(moment: Optional[datetime]) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cli_run(manager: SessionManager, command: str, argument: Optional[str]) -> int:
    store = manager.store
    if command == "count":
        print(len(store))
        return 0
    if command == "prune":
        prune = getattr(store, "prune", None)
        print(prune() if callable(prune) else 0)
        return 0
    if command == "sessions-of":
        infos = manager.sessions_of(argument)
        for info in infos:
            print(info.handle, _cli_time(info.created), _cli_time(info.last_seen), _cli_time(info.expires), sep="\t")
        return 0 if infos else 1
    if command == "end-sessions-of":
        ended = manager.end_sessions_of(argument)
        print(ended)
        return 0 if ended else 1
    matches = [sid for sid in store.ids() if _sid_hash(sid) == argument]  # end HANDLE
    if len(matches) != 1:
        print(f"sessions.py: {'no' if not matches else 'more than one'} session has handle {argument}", file=sys.stderr)
        return 1
    store.destroy(matches[0])
    print(1)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python3 sessions.py STORE COMMAND``: see ``--help``. Returns the exit status."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="sessions.py", description="Inspect and end the sessions in a session store.",
        epilog=_CLI_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", metavar="STORE")
    parser.add_argument("--table", help="the SQL table (default: the store's own default)")
    parser.add_argument("--prefix", help="the Redis key prefix (default: sess:)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("count")
    commands.add_parser("prune")
    for name, operand in (("sessions-of", "OWNER"), ("end-sessions-of", "OWNER"), ("end", "HANDLE")):
        commands.add_parser(name).add_argument("operand", metavar=operand)
    args = parser.parse_args(argv)
    operand = getattr(args, "operand", None)
    if args.command == "end" and not re.fullmatch(r"[0-9a-f]{12}", operand):
        parser.error("HANDLE is the 12 hexadecimal digits that sessions-of prints")
    if args.command.endswith("sessions-of") and not _is_owner(operand):
        parser.error(f"OWNER must be at most {MAX_OWNER_LENGTH} characters")
    try:
        store = _cli_store(args.store, args.table, args.prefix)
        if store is None:
            parser.error("STORE must be sqlite:PATH, redis://... or postgresql://...")
        return _cli_run(SessionManager(_secrets.token_bytes(32), store=store), args.command, operand)
    except ImportError as exc:
        print(f"sessions.py: this store needs the {exc.name} package (pip install {exc.name})", file=sys.stderr)
    except (SessionError, NotImplementedError, FileNotFoundError) as exc:  # their messages hold no ids
        print(f"sessions.py: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
