"""The benchmark's own correctness: ``bench/run.py --quick`` runs every measurement on tiny sizes, and its
checks confirm that each one exercised the code path it names (store writes, Set-Cookie, Flask's save,
no store traffic for untouched requests, keep-alive end to end, pruning). No timing is asserted."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))

EXPECTED_CHECKS = {
    # in-process cycles
    "modified_store_writes", "modified_set_cookie", "unmodified_no_set_cookie", "new_set_cookie",
    "new_store_writes", "floor_same_cookie", "floor_store_writes", "flask_saved", "untouched_http_responses",
    "untouched_wsgi_responses", "unsign_ok",
    # one request of each kind against a counting store
    "path_modified", "path_unmodified_touch", "path_new", "path_untouched_http", "path_untouched_wsgi",
    # end to end
    "e2e_session_saved_every_request", "e2e_session_cookie_sent", "e2e_same_session", "e2e_plain_served",
    "e2e_plain_no_cookie", "e2e_floor_cookie", "e2e_keep_alive", "e2e_all_200",
}


@pytest.fixture(scope="module")
def quick_run():
    pytest.importorskip("flask")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
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


def test_every_figure_is_reported(quick_run):
    _, results = quick_run
    us = results["cycle"]["us"]
    for key in ("floor", "sessions_modified", "sessions_unmodified", "sessions_new", "flask",
                "http_plain", "http_sessions", "wsgi_plain", "wsgi_sessions", "sign", "unsign"):
        assert us[key] > 0, key
    for key in ("plain_rps", "sessions_rps", "floor_rps", "ratio"):
        assert results["e2e"][key] > 0, key
    assert len(results["store"]["sizes"]) == 3
    for size in results["store"]["sizes"]:
        for key in ("overhead_after_fill", "overhead_steady", "get_per_s", "set_per_s", "prune_ms"):
            assert size[key] > 0, key


def test_table_marks_each_target(quick_run):
    stdout, results = quick_run
    assert len(results["targets"]) == 7
    for target in results["targets"]:
        assert isinstance(target["met"], bool)
        mark = "MET   " if target["met"] else "MISSED"
        assert f"{mark}  {target['target']}" in stdout
