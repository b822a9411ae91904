"""The in-process cycle of two sessions.py side by side: a git revision against the working tree.

    python3 bench/compare.py REV [--rounds N]

Runs ``bench/cycle.py``'s section (the same measurement as ``bench/run.py``'s first table) in fresh
processes, alternating the two files round by round so both see the same machine, and prints each
variant's median time and the median per-round ratio (working tree / REV). Ratios are what to quote: on
a shared machine absolute times drift between rounds, ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOWN = ("sessions_modified", "sessions_unmodified", "sessions_new", "floor", "http_sessions", "wsgi_sessions")
CHILD = (
    "import json, sys; sys.path.append(sys.argv[1]); from bench import cycle; "
    "r = cycle.run(5, 0.05); print(json.dumps({'us': r['us'], 'ratio_floor': r['ratio_floor']}))"
)


def measure(sessions_dir: str) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=sessions_dir)
    out = subprocess.run([sys.executable, "-c", CHILD, ROOT], env=env, cwd=tempfile.gettempdir(),
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return dict(result["us"], ratio_floor=result["ratio_floor"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the git revision to compare the working tree's sessions.py with")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as old_dir:
        source = subprocess.run(["git", "show", f"{args.rev}:sessions.py"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout
        with open(os.path.join(old_dir, "sessions.py"), "w") as file:
            file.write(source)
        runs: Dict[str, List[Dict[str, float]]] = {"rev": [], "tree": []}
        for _ in range(args.rounds):
            runs["rev"].append(measure(old_dir))
            runs["tree"].append(measure(ROOT))
    print(f"{'variant':<22}{args.rev + ' µs':>14}{'tree µs':>12}{'tree/rev':>10}")
    for name in SHOWN + ("ratio_floor",):
        old = [run[name] for run in runs["rev"]]
        new = [run[name] for run in runs["tree"]]
        ratio = statistics.median(n / o for n, o in zip(new, old))
        print(f"{name:<22}{statistics.median(old):>14.2f}{statistics.median(new):>12.2f}{ratio:>9.2f}x")


if __name__ == "__main__":
    main()
