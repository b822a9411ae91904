"""Django under gunicorn (sync workers): ``gunicorn bench.apps.django_app:application``; the variant is
BENCH_APP's. ``python -m bench.apps.django_app migrate`` creates the ``db`` variant's table.

- ``none``: no session middleware.
- ``django_db``: Django's default ``db`` backend on SQLite, with the settings Django's docs give for SQLite
  in production (``init_command`` WAL + ``synchronous=NORMAL``, ``transaction_mode = "IMMEDIATE"``) and
  persistent connections (``CONN_MAX_AGE = 600``).
- ``django_cache_redis``: the ``cache`` backend on ``django.core.cache.backends.redis.RedisCache``.
- ``django_signed_cookies``: the ``signed_cookies`` backend.
- ``sessions_memory``, ``sessions_sqlite``, ``sessions_redis``: sessions.py switched on by settings
  (README "Django": ``DjangoSessionsConfig``, ``DjangoSessionMiddleware``, ``SESSION_ENGINE = "sessions"``,
  ``SESSIONS_PY_STORE``).

Middleware is the session middleware alone in every variant (no CSRF, no auth), so the rest is equal.
"""

from __future__ import annotations

import sys

from django.conf import settings

from bench import apps

VARIANT = apps.VARIANT
options = {}
if VARIANT == "none":
    CONFIG_TEXT = "no session middleware"
elif VARIANT == "django_db":
    options = dict(
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.sqlite3", "NAME": apps.CONFIG["sqlite"], "CONN_MAX_AGE": 600,
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                        "transaction_mode": "IMMEDIATE"},
        }},
    )
    CONFIG_TEXT = ("SESSION_ENGINE='django.contrib.sessions.backends.db' on SQLite (CONN_MAX_AGE=600, "
                   "init_command WAL + synchronous=NORMAL, transaction_mode='IMMEDIATE')")
elif VARIANT == "django_cache_redis":
    options = dict(
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": apps.redis_url()}},
    )
    CONFIG_TEXT = ("SESSION_ENGINE='django.contrib.sessions.backends.cache', CACHES default "
                   f"RedisCache at {apps.redis_url()!r}")
elif VARIANT == "django_signed_cookies":
    options = dict(
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    )
    CONFIG_TEXT = "SESSION_ENGINE='django.contrib.sessions.backends.signed_cookies'"
elif VARIANT.startswith("sessions_"):
    options = dict(
        INSTALLED_APPS=["sessions.DjangoSessionsConfig"],
        MIDDLEWARE=["sessions.DjangoSessionMiddleware"],
        SESSION_ENGINE="sessions",
        SESSIONS_PY_STORE=apps.our_store(),
    )
    CONFIG_TEXT = f"sessions.DjangoSessionMiddleware, SESSION_ENGINE='sessions', SESSIONS_PY_STORE={apps.our_store_text()}"
else:
    raise SystemExit(f"unknown variant {VARIANT!r}")
CONFIG_TEXT += "; Django's SESSION_* defaults (2-week cookie age)"
settings.configure(**{"DEBUG": False, "ALLOWED_HOSTS": ["127.0.0.1"], "SECRET_KEY": apps.SECRET,
                      "ROOT_URLCONF": __name__, "INSTALLED_APPS": [], "MIDDLEWARE": [], **options})
SESSION = VARIANT != "none"

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def text(body: str) -> HttpResponse:
    return HttpResponse(body, content_type="text/plain; charset=utf-8")


def read(request):
    return text(apps.page("read", request.GET.get("k", ""), request.session.get("views", 0) if SESSION else 0))


def write(request):
    views = 0
    if SESSION:
        request.session["views"] = views = request.session.get("views", 0) + 1
    return text(apps.page("write", request.GET.get("k", ""), views))


def untouched(request):
    return text(apps.page("untouched", request.GET.get("k", ""), -1))


def new(request):
    if SESSION:
        request.session["views"] = 1
    return text(apps.page("new", "0", 1 if SESSION else 0))


def seed(request):
    if SESSION:
        request.session.update(apps.SEEDED)
    return text("seeded\n")


def config(request):
    return text(CONFIG_TEXT)


urlpatterns = [path("read", read), path("write", write), path("untouched", untouched), path("new", new),
               path("seed", seed), path("config", config)]
application = get_wsgi_application()

if __name__ == "__main__" and sys.argv[1:] == ["migrate"]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
