"""Flask under gunicorn (sync workers): ``gunicorn bench.apps.flask_app:app``; the variant is BENCH_APP's.

- ``none``: no session used.
- ``flask_cookie``: Flask's own signed-cookie session (its defaults).
- ``flask_session_redis``: Flask-Session 0.8 as its docs show: ``SESSION_TYPE = "redis"``,
  ``SESSION_REDIS = Redis.from_url(...)``, ``Session(app)``, its defaults otherwise (permanent sessions,
  msgpack, ``session:`` prefix).
- ``sessions_memory``, ``sessions_sqlite``, ``sessions_redis``: ``sessions.FlaskSessionInterface(store=...)``
  (README "Flask"), Flask's settings.
"""

from __future__ import annotations

import flask

from bench import apps

app = flask.Flask("bench_flask")
app.config.update(SECRET_KEY=apps.SECRET)
VARIANT = apps.VARIANT
if VARIANT == "none":
    CONFIG_TEXT = "no session"
elif VARIANT == "flask_cookie":
    CONFIG_TEXT = "Flask's SecureCookieSessionInterface (itsdangerous-signed cookie), Flask's defaults"
elif VARIANT == "flask_session_redis":
    from flask_session import Session

    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=apps.redis_client())
    Session(app)
    CONFIG_TEXT = (f"Flask-Session: SESSION_TYPE='redis', SESSION_REDIS=Redis.from_url({apps.redis_url()!r}), "
                   "Session(app); defaults otherwise (SESSION_PERMANENT=True, msgpack, prefix 'session:')")
elif VARIANT.startswith("sessions_"):
    import sessions

    app.session_interface = sessions.FlaskSessionInterface(store=apps.our_store())
    CONFIG_TEXT = f"sessions.FlaskSessionInterface(store={apps.our_store_text()}); Flask's settings"
else:
    raise SystemExit(f"unknown variant {VARIANT!r}")
SESSION = VARIANT != "none"
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/read")
def read():
    views = flask.session.get("views", 0) if SESSION else 0
    return apps.page("read", flask.request.args.get("k", ""), views), TEXT


@app.get("/write")
def write():
    views = 0
    if SESSION:
        flask.session["views"] = views = flask.session.get("views", 0) + 1
    return apps.page("write", flask.request.args.get("k", ""), views), TEXT


@app.get("/untouched")
def untouched():
    return apps.page("untouched", flask.request.args.get("k", ""), -1), TEXT


@app.get("/new")
def new():
    if SESSION:
        flask.session["views"] = 1
    return apps.page("new", "0", 1 if SESSION else 0), TEXT


@app.get("/seed")
def seed():
    if SESSION:
        flask.session.update(apps.SEEDED)
    return "seeded\n", TEXT


@app.get("/config")
def config():
    return CONFIG_TEXT, TEXT
