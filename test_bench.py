"""The benchmark's own correctness: ``bench/run.py --quick`` runs every measurement on tiny sizes, and its
checks confirm that each one exercised the code path it names (store writes and touches, Set-Cookie, Flask's
save, no store traffic for untouched requests, keep-alive end to end, every server answering what the client
counted, round trips per request kind, pruning; under gunicorn and uvicorn, every framework variant's responses
checked one by one by wrk's script). No timing is asserted.

Node is optional on a laptop: the express-session comparison runs when ``node`` and bench/express/node_modules
are there (``npm ci`` in bench/express) and is then checked too. Under CI (the CI variable set; .ci/run
installs the fixture) node, redis-server, PostgreSQL, wrk, Flask-Session and starsessions are required, as for
the other suites."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import missing

ROOT = os.path.dirname(os.path.abspath(__file__))
CI = bool(os.environ.get("CI"))

EXPECTED_CHECKS = {
    # tight-loop cycles
    "modified_store_writes", "modified_set_cookie", "unmodified_no_set_cookie", "new_set_cookie",
    "new_store_writes", "floor_same_cookie", "floor_store_writes", "flask_saved", "untouched_http_responses",
    "untouched_wsgi_responses", "unsign_ok",
    # one request of each kind against a counting store
    "path_modified", "path_unmodified_touch", "path_new", "path_untouched_http", "path_untouched_wsgi",
    # in-process full request over loopback sockets
    "inprocess_all_served", "inprocess_session_saved", "inprocess_set_cookies",
    "inprocess_all_served_cold", "inprocess_session_saved_cold", "inprocess_set_cookies_cold",
    # end to end, a process per server
    "e2e_session_cookie_sent", "e2e_session_saved_every_request", "e2e_set_cookie_every_response",
    "e2e_same_session", "e2e_fair_same_headers", "e2e_floor_same_headers", "e2e_keep_alive", "e2e_all_200", "e2e_served_counted",
}
EXPRESS_CHECKS = {"express_session_saved_every_request", "express_cookie_sent", "express_fair_same_headers"}
FLASK_SESSION_CHECKS = {"stores_flask_session_modified_saved", "stores_flask_session_cookies",
                        "stores_flask_session_writes_every_request"}
REDIS_STORE_CHECKS = {"stores_redis_modified_saved", "stores_redis_cookies", "stores_redis_untouched_no_trips",
                      "stores_redis_read_only_touches", "stores_redis_modified_sets", "stores_redis_new_sets_only",
                      "stores_redis_touch_after_reads"}
POSTGRES_STORE_CHECKS = {"stores_postgres_modified_saved", "stores_postgres_cookies",
                         "stores_postgres_untouched_no_statements", "stores_postgres_read_only_touches",
                         "stores_postgres_modified_updates", "stores_postgres_new_one_transaction",
                         "stores_postgres_4_processes"}
CLUSTER_CHECKS = {"stores_cluster_modified_saved", "stores_cluster_cookies", "stores_cluster_untouched_no_trips",
                  "stores_cluster_trips"}
# bench/frameworks.py: per framework and variant (every variant: all_200; a session variant: its seeded sessions
# found, a new session's cookie sent; sessions.py: untouched requests send no cookie; a store every worker
# shares: each write kept; a cookie session: each write re-sends the cookie; no session: no cookie ever)
FRAMEWORK_VARIANTS = {
    "flask": ("none", "flask_cookie", "flask_session_redis", "sessions_memory", "sessions_sqlite", "sessions_redis"),
    "fastapi": ("none", "starlette_cookie", "starsessions_redis", "sessions_memory", "sessions_sqlite",
                "sessions_redis"),
    "django": ("none", "django_db", "django_cache_redis", "django_signed_cookies", "sessions_memory",
               "sessions_sqlite", "sessions_redis"),
}
SHARED = {"flask_session_redis", "starsessions_redis", "django_db", "django_cache_redis", "sessions_sqlite",
          "sessions_redis", "sessions_async_redis"}
COOKIE = {"flask_cookie", "starlette_cookie", "django_signed_cookies"}


def framework_checks(framework: str, variant: str) -> set:
    names = {"all_200"}
    if variant == "none":
        names.add("no_cookie")
    else:
        names |= {"sessions_found", "new_sends_cookie"}
    if variant.startswith("sessions_"):
        names.add("untouched_no_cookie")
    if variant in SHARED:
        names.add("writes_kept")
    if variant in COOKIE:
        names.add("write_sends_cookie")
    return {f"frameworks_{framework}_{variant}_{name}" for name in names}


SQLITE_STORE_CHECKS = {"stores_sqlite_modified_saved", "stores_sqlite_cookies", "stores_sqlite_untouched_no_statements",
                       "stores_sqlite_new_one_transaction", "stores_sqlite_read_only_updates",
                       "stores_sqlite_4_processes", "stores_sqlite_touch_after_reads"}


def node_ready() -> bool:
    return shutil.which("node") is not None and os.path.isdir(
        os.path.join(ROOT, "bench", "express", "node_modules", "express-session"))


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def quick_run():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    return proc.stdout, json.loads(lines[-1])


def test_every_check_ran_and_passed(quick_run):
    _, results = quick_run
    checks = results["checks"]
    assert EXPECTED_CHECKS <= set(checks), EXPECTED_CHECKS - set(checks)
    sizes = [s["n"] for s in results["store"]["sizes"]]
    for n in sizes:
        for name in ("stored_all", "gets_found", "pruned_1000_each_time", "live_kept"):
            assert f"store_{n}_{name}" in checks
    assert [name for name, ok in checks.items() if not ok] == []


def test_express_compared_when_node_is_ready(quick_run):
    _, results = quick_run
    if not node_ready():
        assert results["e2e"]["express"].startswith("n/a")
        missing("node or bench/express/node_modules is missing: run `npm ci --prefix bench/express`")
    assert results["e2e"]["express"] == "ran"
    assert EXPRESS_CHECKS <= set(results["checks"])
    for run in ("pingpong", "pipelined"):
        assert {"express_session/express_plain", "express_session/express_fair", "advantage/plain",
                "advantage/fair"} <= set(results["e2e"][run]["ratios"])


def test_stores_section_checks_what_exists(quick_run):
    _, results = quick_run
    stores, checks = results["stores"], set(results["checks"])
    if shutil.which("redis-server") is None:
        assert stores["missing"]["redis"].startswith("n/a")
        missing("redis-server is not installed")
    if CI or _importable("flask_session"):
        assert FLASK_SESSION_CHECKS <= checks
    # the sessions.py that bench/run.py imported (PYTHONPATH may name another copy) has the class or not
    for name, expected in (("RedisStore", REDIS_STORE_CHECKS), ("SQLiteStore", SQLITE_STORE_CHECKS)):
        if name in stores["missing"]:
            assert stores["missing"][name] == f"n/a (sessions.{name} missing)"
            assert not expected & checks
        else:
            assert expected <= checks, expected - checks
    if "RedisStore" not in stores["missing"] and "flask_session" not in stores["missing"]:
        assert set(stores["redis_vs_flask_session"]) >= {"mix", "untouched", "read_only", "modified", "new"}
    if CI or "postgres" not in stores["missing"]:  # .ci/run installs PostgreSQL
        assert POSTGRES_STORE_CHECKS <= checks, POSTGRES_STORE_CHECKS - checks
        assert set(stores["postgres"]["trips"]) == {"untouched", "read_only", "modified", "new"}
    if CI or "cluster" not in stores["missing"]:
        assert CLUSTER_CHECKS <= checks, CLUSTER_CHECKS - checks


def test_frameworks_section_checks_every_variant(quick_run):
    """Every framework's variants ran under their real server and wrk, and each exercised its path."""
    _, results = quick_run
    section, checks = results["frameworks"], set(results["checks"])
    if shutil.which("wrk") is None:
        assert section["missing"]["wrk"].startswith("n/a")
        missing("wrk is not installed (Debian: apt-get install wrk)")
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed")
    for framework, variants in FRAMEWORK_VARIANTS.items():
        part = section["frameworks"][framework]
        if framework == "fastapi" and "fastapi.sessions_async_redis" not in section["missing"]:
            variants += ("sessions_async_redis",)  # the sessions.py in use has an async Redis store
        assert "missing" not in part, part.get("missing")
        for variant in variants:
            assert framework_checks(framework, variant) <= checks, framework_checks(framework, variant) - checks
            for mix in ("read", "write", "mix"):
                figures = part["variants"][variant][mix]
                assert figures["rps"] > 0 and figures["requests"] > 0 and figures["p99_ms"] >= figures["p50_ms"] > 0
        assert part["config"]["none"].startswith("no session")


def test_every_figure_is_reported(quick_run):
    _, results = quick_run
    us = results["cycle"]["us"]
    for key in ("floor", "sessions_modified", "sessions_unmodified", "sessions_new", "flask",
                "http_plain", "http_sessions", "wsgi_plain", "wsgi_sessions", "sign", "unsign"):
        assert us[key] > 0, key
    for run in ("inprocess", "inprocess_cold"):
        for key in ("plain", "fair", "sessions", "floor"):
            assert results[run]["us"][key] > 0, (run, key)
    for run in ("pingpong", "pipelined"):
        variants = results["e2e"][run]["variants"]
        for key in ("plain", "fair", "sessions", "floor"):
            assert variants[key]["rps"] > 0 and variants[key]["server_cpu_us"] > 0, (run, key)
        assert {"fair/plain", "sessions/plain", "sessions/fair", "floor/fair"} <= set(results["e2e"][run]["ratios"])
    assert len(results["store"]["sizes"]) == 3
    for size in results["store"]["sizes"]:
        for key in ("overhead_after_fill", "overhead_steady", "get_per_s", "set_per_s", "prune_ms"):
            assert size[key] > 0, key


def test_table_marks_each_target(quick_run):
    stdout, results = quick_run
    assert len(results["targets"]) == 15 + 15  # 15 of sections 1 to 6, 15 of the frameworks
    for target in results["targets"]:
        assert isinstance(target["met"], bool)
        mark = "MET   " if target["met"] else "MISSED"
        assert f"{mark}  {target['target']}" in stdout
