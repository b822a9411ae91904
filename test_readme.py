"""The README's first ten minutes, as written: its test command is the one CI runs, and every example of a
way in, extracted from README.md, runs as a file: the quick starts (http.server, WSGI) and the framework
recipes each serve, print their URL, count only real page views and give another browser its own count;
a quick start says in one line when its port is taken. There is one example per way in. So the README
cannot drift from the code."""

from __future__ import annotations

import contextlib
import http.cookiejar
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional

import pytest

from conftest import free_port, stop_process

HERE = Path(__file__).resolve().parent
README = (HERE / "README.md").read_text(encoding="utf-8")
TEST_COMMAND = ("python3 -m venv .venv && .venv/bin/python -m pip install -r requirements-dev.txt"
                " && .venv/bin/python -m pytest")
#: A quick start is a ```python block right after this marker, which names the file it is saved as.
QUICKSTART = re.compile(r"^<!-- quickstart: (\S+\.py) [^\n]*-->\n```python\n(.*?)^```$", re.M | re.S)
QUICKSTARTS = dict(QUICKSTART.findall(README))
#: A framework recipe: a ```python block right after this marker, saved as app.py.
RECIPE = re.compile(r"^<!-- recipe: ([\w.]+) -->\n```python\n(.*?)^```$", re.M | re.S)
RECIPES = dict(RECIPE.findall(README))
#: The module each recipe needs beside sessions.py.
FRAMEWORKS = {"bottle": "bottle", "flask": "flask", "fastapi": "fastapi", "starlette": "starlette",
              "django": "django"}
#: The recipes that use a service, and the environment variable that names the test's own one.
SERVICES = {"fastapi": "REDIS_URL"}
#: (file name, README block) for every way in.
EXAMPLES = {**{name: (name, code) for name, code in QUICKSTARTS.items()},
            **{name: ("app.py", code) for name, code in RECIPES.items()}}
START_SECONDS = 20


def test_readme_has_one_example_per_way_in():
    assert sorted(QUICKSTARTS) == ["quickstart_http.py", "quickstart_wsgi.py"]
    assert sorted(RECIPES) == sorted(FRAMEWORKS)
    found = QUICKSTART.findall(README) + RECIPE.findall(README)
    assert len(found) == len(EXAMPLES), "a way in has two examples"
    for name, code in QUICKSTARTS.items():
        assert code.startswith(f"# {name}:"), "the block names the file the text tells you to save"


def test_readme_test_command_is_the_one_ci_runs():
    top = README.split("\n## ", 1)[0]
    assert TEST_COMMAND in top
    assert "python3-venv" in top  # Debian/Ubuntu without the venv module
    assert TEST_COMMAND in (HERE / ".ci" / "run").read_text(encoding="utf-8")


def save_example(folder: Path, name: str) -> str:
    """The README block saved under the file name the README gives, next to a copy of sessions.py."""
    filename, code = EXAMPLES[name]
    (folder / filename).write_text(code, encoding="utf-8")
    shutil.copy(HERE / "sessions.py", folder / "sessions.py")
    return filename


def example_env(port: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PORT=str(port), PYTHONUNBUFFERED="1", **extra)
    return env


def run_quickstart(tmp_path: Path, name: str, port: int) -> subprocess.Popen:
    """The block saved as its file next to a copy of sessions.py, run the way the README says."""
    filename = save_example(tmp_path, name)
    return subprocess.Popen([sys.executable, filename], cwd=tmp_path, env=example_env(port), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Example:
    """An example running as ``python3 FILE`` with PORT set, its output (stdout and stderr) read into
    ``lines`` by a thread, so a server that logs every request never blocks on a full pipe."""

    def __init__(self, folder: Path, name: str, port: int, **env: str) -> None:
        filename = save_example(folder, name)
        self.process = subprocess.Popen([sys.executable, filename], cwd=folder, env=example_env(port, **env), text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: List[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # the pipe closed when the process was stopped
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))

    def line_with(self, text: str) -> Optional[str]:
        """The first line of output holding ``text``, waiting for it (bounded) while the program runs."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            exited = self.process.poll() is not None
            if exited:
                self.reader.join(5)  # all it printed has been read
            found = next((line for line in list(self.lines) if text in line), None)
            if found is not None or exited:
                return found
            time.sleep(0.05)
        return None

    def output(self) -> str:
        return "\n".join(self.lines)


def accepts_connections(port: int) -> bool:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def get(opener, url: str):
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode(), \
                response.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode(), []


def browser():
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_serves_prints_its_url_and_counts_real_page_views_only(tmp_path, name, request):
    if name in FRAMEWORKS and importlib.util.find_spec(FRAMEWORKS[name]) is None:
        # Not missing(): CI's runs on the other Pythons install only the library's test dependencies;
        # its main run installs requirements-dev.txt, which test_frameworks.py needs as well.
        pytest.skip(f"{FRAMEWORKS[name]} is not installed (requirements-dev.txt)")
    env = {}
    if name in SERVICES:
        env[SERVICES[name]] = request.getfixturevalue("redis_server").url
    for _ in range(3):  # the example binds PORT itself: another process may take it first
        port = free_port()
        example = Example(tmp_path, name, port, **env)
        try:
            url = f"http://127.0.0.1:{port}"
            printed = example.line_with(url)
            if printed is None and "Address already in use" in example.output():
                continue
            assert printed is not None, f"{name} printed no URL:\n{example.output()}"
            assert accepts_connections(port), f"{name} does not listen:\n{example.output()}"
            jar = browser()
            status, content_type, body, cookies = get(jar, url + "/")
            assert (status, body, len(cookies)) == (200, "views: 1\n", 1)
            assert content_type.startswith("text/plain")
            assert get(jar, url + "/favicon.ico")[0] == 404  # what a real browser asks for after each page
            assert get(jar, url + "/")[:3] == (200, content_type, "views: 2\n")
            assert get(browser(), url + "/")[2] == "views: 1\n"  # another browser: its own count
            assert get(jar, url + "/")[2] == "views: 3\n"
            return
        finally:
            stop_process(example.process)
    pytest.fail(f"{name} found no free port in three tries")


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
