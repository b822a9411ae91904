"""The distribution, built as a user's pip builds it: the wheel holds sessions.py, its metadata and the
licence, nothing else (not the demo, the tests, the benchmark or the fixtures); installed into a fresh
virtual environment it imports from anywhere, with the version sessions.__version__ says."""

from __future__ import annotations

import ast
import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator, List

import pytest

HERE = Path(__file__).resolve().parent
#: What a checkout holds that is not the project's source (virtual environments, node_modules, caches).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "node_modules", "__pycache__", ".pytest_cache",
                                    ".hypothesis", "build", "dist", "*.egg-info")


def source_version() -> str:
    """``__version__`` as written in sessions.py (read from the text, as the build backend does)."""
    tree = ast.parse((HERE / "sessions.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            return ast.literal_eval(node.value)
    raise AssertionError("sessions.py has no __version__")


VERSION = source_version()
README = (HERE / "README.md").read_text(encoding="utf-8")
#: How the README's "Installing" builds a wheel; the fixture ``wheel`` runs exactly this.
WHEEL_COMMAND = "python3 -m pip wheel . --no-deps --wheel-dir dist"


def run(args: List[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the whole checkout (demo, tests, bench and fixtures included, so the build must leave them
    out): building writes build/ and sessions.egg-info/ next to the sources, never into the real one."""
    copy = tmp_path_factory.mktemp("checkout") / "sessions-src"
    shutil.copytree(HERE, copy, ignore=NOT_SOURCE)
    return copy


@pytest.fixture(scope="module")
def wheel(checkout: Path) -> Path:
    """The README's command, as a user runs it (pip fetches the build backend into an isolated
    environment)."""
    run([sys.executable if word == "python3" else word for word in WHEEL_COMMAND.split()], cwd=checkout)
    (built,) = (checkout / "dist").glob("*.whl")
    return built


def test_the_readme_builds_the_wheel_with_this_command():
    install = README.split("### Installing", 1)[1].split("\n## ", 1)[0]
    assert WHEEL_COMMAND in install
    assert "python3 -m pip install .  " in install and 'python3 -m pip install ".[redis]"' in install


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment (no pip of its own) with only the wheel installed into it by this pip."""
    home = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(home)], cwd=home)
    python = home / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps", "--quiet",
         str(wheel)], cwd=home)
    yield python


def test_the_wheel_is_named_for_the_version_in_sessions_py(wheel: Path):
    assert wheel.name == f"sessions-{VERSION}-py3-none-any.whl"


def test_the_wheel_holds_only_sessions_py_its_metadata_and_the_licence(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(archive.namelist())
    info = f"sessions-{VERSION}.dist-info"
    assert names == sorted(["sessions.py", f"{info}/METADATA", f"{info}/WHEEL", f"{info}/RECORD",
                            f"{info}/top_level.txt", f"{info}/licenses/LICENSE"])
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("sessions.py") == (HERE / "sessions.py").read_bytes()
        assert archive.read(f"{info}/licenses/LICENSE") == (HERE / "LICENSE").read_bytes()


def test_the_metadata_says_python_3_9_the_licence_and_the_extras_without_dependencies(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read(f"sessions-{VERSION}.dist-info/METADATA"))
    assert metadata["Name"] == "sessions" and metadata["Version"] == VERSION
    assert metadata["Requires-Python"] == ">=3.9"
    assert metadata["License-Expression"] == "MIT"
    assert sorted(metadata.get_all("Provides-Extra")) == ["postgres", "redis"]
    requirements = metadata.get_all("Requires-Dist")
    # Every requirement belongs to an extra: a plain install pulls in nothing.
    assert requirements and all("extra ==" in requirement for requirement in requirements)
    assert any(r.startswith("redis") and 'extra == "redis"' in r for r in requirements)
    assert any(r.startswith("psycopg[binary]") and 'extra == "postgres"' in r for r in requirements)
    assert any(r.startswith("psycopg_pool") or r.startswith("psycopg-pool") for r in requirements)
    assert "Programming Language :: Python :: 3.9" in metadata.get_all("Classifier")
    assert metadata.get_payload().startswith("# sessions.py")  # the README is the long description


def test_installed_it_imports_from_another_directory_with_its_version(venv: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run([str(venv), "-c", "import importlib.metadata, sessions; "
               "print(sessions.__file__); print(sessions.__version__); "
               "print(importlib.metadata.version('sessions'))"], cwd=elsewhere)
    where, version, installed = out.split()
    assert Path(where).parent.name == "site-packages" and Path(where).is_relative_to(venv.parent.parent)
    assert version == installed == VERSION


def test_installed_it_brings_no_other_module(venv: Path, tmp_path: Path):
    out = run([str(venv), "-c", "import importlib.metadata; "
               "print(importlib.metadata.distribution('sessions').read_text('top_level.txt'))"], cwd=tmp_path)
    assert out.split() == ["sessions"]
    for module in ("demo_server", "conftest", "test_sessions", "bench", "fixtures"):
        probe = subprocess.run([str(venv), "-c", f"import {module}"], cwd=tmp_path, capture_output=True)
        assert probe.returncode != 0, f"{module} is importable from the installed distribution"


def test_the_sdist_holds_the_sources_but_no_demo_bench_or_fixtures(checkout: Path, tmp_path: Path):
    """Built by the backend pip uses (setuptools' PEP 517 hook), in the copied checkout."""
    run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(tmp_path)!r})"],
        cwd=checkout)
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"sessions.py", "pyproject.toml", "README.md", "LICENSE"} <= names
    assert not {name for name in names if name.split("/")[0] in ("bench", "fixtures", "demo_server.py")}
