"""Benchmarks for sessions.py: run ``python bench/run.py`` (``--quick`` for a seconds-long smoke run)."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def record_text(stored: Any) -> Optional[str]:
    """A store's ``get()`` result as record text: stores may return ``(record, expires_at)``."""
    return stored[0] if isinstance(stored, tuple) else stored


def child_env() -> Dict[str, str]:
    """The environment for a child Python that must import this very sessions.py and this bench package
    (the one found first on ``sys.path``, e.g. a copy named by ``PYTHONPATH``)."""
    import sessions

    env = dict(os.environ)
    paths = [os.path.dirname(os.path.abspath(sessions.__file__)), ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env
