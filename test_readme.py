"""The README's first ten minutes, as written: its test command is the one CI runs, and each quick start,
extracted from README.md, runs as a file, serves, prints its URL, counts only real page views and says in
one line when its port is taken. So the README cannot drift from the code."""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, stop_process

HERE = Path(__file__).resolve().parent
README = (HERE / "README.md").read_text(encoding="utf-8")
TEST_COMMAND = ("python3 -m venv .venv && .venv/bin/python -m pip install -r requirements-dev.txt"
                " && .venv/bin/python -m pytest")
#: A quick start is a ```python block right after this marker, which names the file it is saved as.
QUICKSTART = re.compile(r"^<!-- quickstart: (\S+\.py) [^\n]*-->\n```python\n(.*?)^```$", re.M | re.S)
QUICKSTARTS = dict(QUICKSTART.findall(README))


def test_readme_has_both_quick_starts():
    assert sorted(QUICKSTARTS) == ["quickstart_http.py", "quickstart_wsgi.py"]
    for name, code in QUICKSTARTS.items():
        assert code.startswith(f"# {name}:"), "the block names the file the text tells you to save"


def test_readme_test_command_is_the_one_ci_runs():
    top = README.split("\n## ", 1)[0]
    assert TEST_COMMAND in top
    assert "python3-venv" in top  # Debian/Ubuntu without the venv module
    assert TEST_COMMAND in (HERE / ".ci" / "run").read_text(encoding="utf-8")


def run_quickstart(tmp_path: Path, name: str, port: int) -> subprocess.Popen:
    """The block saved as its file next to a copy of sessions.py, run the way the README says."""
    (tmp_path / name).write_text(QUICKSTARTS[name], encoding="utf-8")
    shutil.copy(HERE / "sessions.py", tmp_path / "sessions.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PORT=str(port), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, name], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def first_line(process: subprocess.Popen, timeout: float = 10) -> str:
    """The program's first line of output, or a failure with its stderr if it exits or stays silent."""
    lines: list = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert lines and lines[0], f"no output; exit {process.poll()}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
    return lines[0].rstrip("\n")


def get(opener, url: str):
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.mark.parametrize("name", ["quickstart_http.py", "quickstart_wsgi.py"])
def test_quick_start_serves_counts_page_views_and_prints_its_url(tmp_path, name):
    port = free_port()
    process = run_quickstart(tmp_path, name, port)
    try:
        line = first_line(process)
        url = f"http://127.0.0.1:{port}/"
        assert url in line and "Ctrl+C" in line
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        assert get(browser, url) == (200, "text/plain; charset=utf-8", "views: 1\n")
        status, _, _ = get(browser, url + "favicon.ico")  # what a real browser asks for after each page
        assert status == 404
        assert get(browser, url) == (200, "text/plain; charset=utf-8", "views: 2\n")
        other = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        assert get(other, url)[2] == "views: 1\n"
        assert get(browser, url)[2] == "views: 3\n"
    finally:
        stop_process(process)


@pytest.mark.parametrize("name", ["quickstart_http.py", "quickstart_wsgi.py"])
def test_quick_start_says_in_one_line_that_its_port_is_taken(tmp_path, name):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = run_quickstart(tmp_path, name, port)
        try:
            out, err = process.communicate(timeout=10)
        finally:
            stop_process(process)
    assert process.returncode == 1
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"Cannot listen on 127.0.0.1:{port}: ")
    assert "PORT=" in err  # and how to choose another port
