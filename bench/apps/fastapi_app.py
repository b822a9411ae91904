"""FastAPI under uvicorn (``uvicorn bench.apps.fastapi_app:app --workers N``); the variant is BENCH_APP's.

- ``none``: no session middleware.
- ``starlette_cookie``: Starlette's ``SessionMiddleware(secret_key=...)`` (a signed cookie), its defaults.
- ``starsessions_redis``: starsessions 2.2 as its README shows: ``SessionMiddleware(store=RedisStore(
  connection=redis.asyncio.Redis...), lifetime=14 days, rolling=True)`` and ``SessionAutoloadMiddleware``.
- ``sessions_memory``, ``sessions_sqlite``, ``sessions_redis``: ``sessions.ASGISessionMiddleware`` with
  Starlette's arguments plus ``store=`` (README "Starlette and FastAPI").

Endpoints are ``async def``. Cookies are not ``Secure``: the benchmark speaks plain HTTP on loopback.
"""

from __future__ import annotations

import fastapi
from fastapi.responses import PlainTextResponse

from bench import apps

app = fastapi.FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
VARIANT = apps.VARIANT
if VARIANT == "none":
    CONFIG_TEXT = "no session"
elif VARIANT == "starlette_cookie":
    from starlette.middleware.sessions import SessionMiddleware

    app.add_middleware(SessionMiddleware, secret_key=apps.SECRET, max_age=apps.LIFETIME)
    CONFIG_TEXT = "starlette.middleware.sessions.SessionMiddleware(secret_key=..., max_age=14 days); defaults otherwise"
elif VARIANT == "starsessions_redis":
    import redis.asyncio
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware
    from starsessions.stores.redis import RedisStore

    app.add_middleware(SessionAutoloadMiddleware)
    app.add_middleware(SessionMiddleware, store=RedisStore(connection=redis.asyncio.Redis.from_url(apps.redis_url())),
                       lifetime=apps.LIFETIME, rolling=True, cookie_https_only=False)
    CONFIG_TEXT = (f"starsessions: SessionMiddleware(store=RedisStore(connection=redis.asyncio.Redis.from_url("
                   f"{apps.redis_url()!r})), lifetime=14 days, rolling=True, cookie_https_only=False) + "
                   "SessionAutoloadMiddleware(); JSON serializer")
elif VARIANT.startswith("sessions_"):
    import sessions

    app.add_middleware(sessions.ASGISessionMiddleware, secret_key=apps.SECRET, max_age=apps.LIFETIME,
                       store=apps.our_store())
    CONFIG_TEXT = (f"sessions.ASGISessionMiddleware(secret_key=..., max_age=14 days, store={apps.our_store_text()}); "
                   "Starlette's defaults otherwise")
else:
    raise SystemExit(f"unknown variant {VARIANT!r}")
SESSION = VARIANT != "none"


@app.get("/read", response_class=PlainTextResponse)
async def read(request: fastapi.Request, k: str = "") -> str:
    return apps.page("read", k, request.session.get("views", 0) if SESSION else 0)


@app.get("/write", response_class=PlainTextResponse)
async def write(request: fastapi.Request, k: str = "") -> str:
    views = 0
    if SESSION:
        request.session["views"] = views = request.session.get("views", 0) + 1
    return apps.page("write", k, views)


@app.get("/untouched", response_class=PlainTextResponse)
async def untouched(k: str = "") -> str:
    return apps.page("untouched", k, -1)


@app.get("/new", response_class=PlainTextResponse)
async def new(request: fastapi.Request) -> str:
    if SESSION:
        request.session["views"] = 1
    return apps.page("new", "0", 1 if SESSION else 0)


@app.get("/seed", response_class=PlainTextResponse)
async def seed(request: fastapi.Request) -> str:
    if SESSION:
        request.session.update(apps.SEEDED)
    return "seeded\n"


@app.get("/config", response_class=PlainTextResponse)
async def config() -> str:
    return CONFIG_TEXT
