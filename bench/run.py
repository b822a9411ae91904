"""Benchmarks of sessions.py, with the targets of issue 4. Run from the repository root:

    python bench/run.py            # full run, a few minutes on 2 cores
    python bench/run.py --quick    # seconds; used by test_bench.py to check the benchmark itself

Prints a readable table (each target MET or MISSED with its ratio), then one JSON line with every figure,
the machine, and the checks that each benchmark really exercised the code path it names.
Figures are compared side by side within one run (medians of interleaved repetitions): absolute times on a
shared machine drift, ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import cycle, e2e, store  # noqa: E402

FULL = {"cycle_reps": 9, "cycle_seconds": 0.08, "e2e_reps": 11, "e2e_seconds": 0.6,
        "sizes": (10_000, 100_000, 1_000_000), "sample": 50_000, "prune_reps": 7}
QUICK = {"cycle_reps": 3, "cycle_seconds": 0.004, "e2e_reps": 2, "e2e_seconds": 0.2,
         "sizes": (2_000, 4_000, 8_000), "sample": 2_000, "prune_reps": 2}


def machine() -> Dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "system": platform.platform()}


def targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    c, e, sizes = results["cycle"], results["e2e"], results["store"]["sizes"]
    smallest, largest = sizes[0], sizes[-1]
    prune_ratio = largest["prune_ms"] / smallest["prune_ms"]
    worst_memory = max(max(s["overhead_after_fill"], s["overhead_steady"]) for s in sizes)

    def target(name: str, value: float, limit: float, met: bool, shown: str) -> Dict[str, Any]:
        return {"target": name, "value": value, "limit": limit, "met": met, "shown": shown}

    return [
        target("cycle <= 1.5x floor", c["ratio_floor"], 1.5, c["ratio_floor"] <= 1.5, f"{c['ratio_floor']:.2f}x"),
        target("cycle <= 0.3x Flask cookie session", c["ratio_flask"], 0.3, c["ratio_flask"] <= 0.3,
               f"{c['ratio_flask']:.3f}x") if c["ratio_flask"] is not None else
        target("cycle <= 0.3x Flask cookie session (Flask not installed)", None, 0.3, False, "n/a"),
        target("untouched (http.server mixin) < 1 us", c["untouched_http_us"], 1.0, c["untouched_http_us"] < 1.0,
               f"{c['untouched_http_us']:.2f} us"),
        target("untouched (WSGI middleware) < 1 us", c["untouched_wsgi_us"], 1.0, c["untouched_wsgi_us"] < 1.0,
               f"{c['untouched_wsgi_us']:.2f} us"),
        target("end to end >= 90% of no sessions", e["ratio"], 0.9, e["ratio"] >= 0.9, f"{e['ratio'] * 100:.1f}%"),
        target(f"prune 1,000: {largest['n']:,} vs {smallest['n']:,} live <= 2x", prune_ratio, 2.0, prune_ratio <= 2.0,
               f"{prune_ratio:.2f}x"),
        target("<= 300 bytes/session beyond JSON text (worst size, after fill and steady)", worst_memory, 300.0,
               worst_memory <= 300.0, f"{worst_memory:.0f} B"),
    ]


def table(results: Dict[str, Any]) -> str:
    m, c, e, s = results["machine"], results["cycle"], results["e2e"], results["store"]
    us = c["us"]
    out = [
        f"sessions.py benchmark ({results['mode']}) -- {m['cpus']} CPUs, {m['cpu']}, "
        f"{m['implementation']} {m['python']}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(results['started']))}",
        "",
        f"1. Per-request session work, in process (median of {c['reps']} interleaved repetitions)",
        f"   {'variant':<64}{'us/request':>12}{'vs floor':>10}   (vs floor: median of per-repetition ratios)",
    ]
    rows = [
        ("floor (split, HMAC verify, JSON load+dump, dict write, sign)", "floor"),
        ("sessions: loaded, modified (open + 1 change + commit)", "sessions_modified"),
        ("sessions: loaded, unmodified (touch path)", "sessions_unmodified"),
        ("sessions: new session (open + 1 change + commit)", "sessions_new"),
        ("Flask: SecureCookieSessionInterface open + save", "flask"),
    ]
    for label, key in rows:
        if key not in us:
            out.append(f"   {label:<64}{'n/a':>12}")
            continue
        out.append(f"   {label:<64}{us[key]:>12.2f}{c['vs_floor'][key]:>9.2f}x")
    out += [
        f"   {'untouched, http.server mixin (mixin minus plain)':<64}{c['untouched_http_us']:>12.2f}",
        f"   {'untouched, WSGI middleware (middleware minus app)':<64}{c['untouched_wsgi_us']:>12.2f}",
        f"   ratios side by side: cycle/floor {c['ratio_floor']:.2f}x"
        + (f", cycle/Flask {c['ratio_flask']:.3f}x" if c["ratio_flask"] is not None else ", Flask not installed"),
        "",
        f"2. End to end: ThreadingHTTPServer, keep-alive, client in another process "
        f"(median of {e['reps']} rounds of {e['seconds']:g} s)",
        f"   {'server':<34}{'req/s':>10}{'vs plain':>10}{'server CPU us/req':>20}",
        f"   {'same handler, no sessions':<34}{e['plain_rps']:>10.0f}{1:>9.2f}x{e['plain_server_cpu_us']:>20.1f}",
        f"   {'with sessions (1 change/request)':<34}{e['sessions_rps']:>10.0f}{e['ratio']:>9.2f}x"
        f"{e['sessions_server_cpu_us']:>20.1f}",
        f"   {'floor work inline (reference)':<34}{e['floor_rps']:>10.0f}{e['floor_ratio']:>9.2f}x"
        f"{e['floor_server_cpu_us']:>20.1f}",
        f"   per-round ratio, middle half: sessions {e['ratio_quartiles'][0]:.2f}-{e['ratio_quartiles'][1]:.2f}x, "
        f"floor {e['floor_ratio_quartiles'][0]:.2f}-{e['floor_ratio_quartiles'][1]:.2f}x"
        + ("" if e["floor_ratio"] <= 1.0 else "   (floor above plain: rounds disturbed by other load, rerun)"),
        "",
        "3. MemoryStore scale (bytes beyond the JSON text = store structures + the id string)",
        f"   {'sessions':>10}{'JSON B':>8}{'B/sess fill':>13}{'B/sess steady':>15}{'get/s':>11}{'set/s':>11}"
        f"{'prune 1k ms':>13}",
    ]
    for size in s["sizes"]:
        out.append(
            f"   {size['n']:>10,}{size['json_text_bytes']:>8.0f}{size['overhead_after_fill']:>13.0f}"
            f"{size['overhead_steady']:>15.0f}{size['get_per_s']:>11,.0f}{size['set_per_s']:>11,.0f}"
            f"{size['prune_ms']:>13.3f}"
        )
    out += [
        "",
        f"4. Signing: sign {c['sign_per_s']:,.0f}/s, unsign {c['unsign_per_s']:,.0f}/s",
        "",
        "Targets",
    ]
    for t in results["targets"]:
        out.append(f"   {'MET   ' if t['met'] else 'MISSED'}  {t['target']:<78}{t['shown']:>10}")
    failed = [name for name, ok in results["checks"].items() if not ok]
    out += ["", "Checks (each benchmark exercised its code path): " + ("all passed" if not failed else "FAILED: " + ", ".join(failed))]
    return "\n".join(out)


def main(argv: List[str] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", "--tiny", action="store_true", help="a seconds-long run (figures meaningless)")
    args = parser.parse_args(argv)
    p = QUICK if args.quick else FULL
    results: Dict[str, Any] = {"mode": "quick" if args.quick else "full", "started": time.time(), "machine": machine()}
    results["cycle"] = cycle.run(p["cycle_reps"], p["cycle_seconds"])
    results["e2e"] = e2e.run(p["e2e_reps"], p["e2e_seconds"])
    results["store"] = store.run(p["sizes"], p["sample"], p["prune_reps"])
    results["checks"] = {**results["cycle"].pop("checks"), **results["e2e"].pop("checks"), **results["store"].pop("checks")}
    results["targets"] = targets(results)
    results["seconds"] = round(time.time() - results["started"], 1)
    print(table(results))
    print(f"(total {results['seconds']} s)")
    print(json.dumps(results, separators=(",", ":")), flush=True)
    return results


if __name__ == "__main__":
    main()
