"""Benchmarks of sessions.py, with the targets of issues 4, 8, 12, 17 and 21. Run from the repository root:

    python3 bench/run.py            # full run, about 7 minutes on 2 cores (the frameworks section 4)
    python3 bench/run.py --quick    # seconds; used by test_bench.py to check the benchmark itself
    python3 bench/run.py --only frameworks   # one section (or a comma-separated list of them)

Prints readable tables, the targets (each MET or MISSED with its figure), then one JSON line with every
figure, the machine, and the checks that each benchmark really exercised the code path it names.
Figures are compared side by side within one run (medians of interleaved repetitions, request by request
end to end): absolute times on a shared machine drift, ratios much less.

``PYTHONPATH=/some/dir python3 bench/run.py`` benchmarks the sessions.py found there instead of the one
beside bench/ (the header names the file used).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional

# after PYTHONPATH, so that a sessions.py named there wins over the one beside bench/
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sessions  # noqa: E402

from bench import cycle, e2e, frameworks, inprocess, store, stores  # noqa: E402

FULL = {"cycle_reps": 9, "cycle_seconds": 0.08, "inproc_blocks": 20, "inproc_rounds": 1000,
        "cold_blocks": 20, "cold_rounds": 150,
        "pp_blocks": 20, "pp_rounds": 500, "pl_blocks": 20, "pl_rounds": 40, "depth": 16,
        "stores_blocks": 15, "stores_rounds": 150, "trips_n": 50, "mp_seconds": 3.0, "mp_sessions": 200,
        "sizes": (10_000, 100_000, 1_000_000), "sample": 50_000, "prune_reps": 7,
        "fw_rounds": 3, "fw_seconds": 1, "fw_workers": 2, "fw_sessions": 64, "fw_limit": 0}
QUICK = {"cycle_reps": 3, "cycle_seconds": 0.004, "inproc_blocks": 4, "inproc_rounds": 60,
         "cold_blocks": 4, "cold_rounds": 10,
         "pp_blocks": 4, "pp_rounds": 25, "pl_blocks": 4, "pl_rounds": 3, "depth": 8,
         "stores_blocks": 2, "stores_rounds": 6, "trips_n": 5, "mp_seconds": 0.3, "mp_sessions": 20,
         "sizes": (2_000, 4_000, 8_000), "sample": 2_000, "prune_reps": 2,
        "fw_rounds": 1, "fw_seconds": 1, "fw_workers": 1, "fw_sessions": 8, "fw_limit": 40}


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
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "system": platform.platform(), "load_1min": load}


def target(name: str, value: Optional[float], limit: float, met: bool, shown: str) -> Dict[str, Any]:
    return {"target": name, "value": value, "limit": limit, "met": met, "shown": shown}


def targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The targets of the sections that ran (``--only`` runs some)."""
    out: List[Dict[str, Any]] = []
    if "cycle" in results:
        c = results["cycle"]
        out += [
            target("cycle <= 1.5x floor", c["ratio_floor"], 1.5, c["ratio_floor"] <= 1.5, f"{c['ratio_floor']:.2f}x"),
            target("cycle <= 0.3x Flask cookie session", c["ratio_flask"], 0.3, c["ratio_flask"] <= 0.3,
                   f"{c['ratio_flask']:.3f}x") if c["ratio_flask"] is not None else
            target("cycle <= 0.3x Flask cookie session (Flask not installed)", None, 0.3, False, "n/a"),
            target("untouched (http.server mixin) < 1 us", c["untouched_http_us"], 1.0, c["untouched_http_us"] < 1.0,
                   f"{c['untouched_http_us']:.2f} us"),
            target("untouched (WSGI middleware) < 1 us", c["untouched_wsgi_us"], 1.0, c["untouched_wsgi_us"] < 1.0,
                   f"{c['untouched_wsgi_us']:.2f} us"),
        ]
    if "inprocess_cold" in results:
        ip = results["inprocess_cold"]  # the run that sits beside the end-to-end delta
        out.append(target("in-process full request (cold): session work <= 2x the floor's", ip["ratio"], 2.0,
                          ip["ratio"] <= 2.0, f"{ip['ratio']:.2f}x"))
    if "e2e" in results:
        e = results["e2e"]
        pp = e["pingpong"]["ratios"]
        fair = pp["sessions/fair"]["median"]
        out.append(target("end to end, ping-pong: sessions >= 0.90 of the fair limit", fair, 0.9, fair >= 0.9,
                          f"{fair:.3f}"))
        for den in ("plain", "fair"):
            name = f"end to end, ping-pong: sessions/{den} >= express-session's own + 0.15"
            adv = pp.get(f"advantage/{den}")
            if adv is None:
                out.append(target(name, None, 0.15, False, e["express"].split(" (")[0]))
            else:
                out.append(target(name, adv["median"], 0.15, adv["median"] >= 0.15, f"{adv['median']:+.3f}"))
    if "stores" in results:
        out += stores_targets(results["stores"])
    if "store" in results:
        sizes = results["store"]["sizes"]
        smallest, largest = sizes[0], sizes[-1]
        prune_ratio = largest["prune_ms"] / smallest["prune_ms"]
        worst_memory = max(max(s["overhead_after_fill"], s["overhead_steady"]) for s in sizes)
        out += [
            target(f"prune 1,000: {largest['n']:,} vs {smallest['n']:,} live <= 2x", prune_ratio, 2.0,
                   prune_ratio <= 2.0, f"{prune_ratio:.2f}x"),
            target("<= 300 bytes/session beyond JSON text (worst size, after fill and steady)", worst_memory, 300.0,
                   worst_memory <= 300.0, f"{worst_memory:.0f} B"),
        ]
    if "frameworks" in results:
        out += frameworks.targets(results["frameworks"], target)
    return out


def stores_targets(st: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    vs = st.get("redis_vs_flask_session")
    name = "RedisStore cycle <= 0.6x Flask-Session's (equal mix of the 4 kinds)"
    out.append(target(name, vs["mix"], 0.6, vs["mix"] <= 0.6, f"{vs['mix']:.2f}x") if vs else
               target(name, None, 0.6, False, "n/a"))
    for key, label in (("redis", "RedisStore"), ("sqlite", "SQLiteStore")):
        name = f"{label}, touch_after: a read-only request makes exactly 1 store round trip"
        trips = ((st.get(key) or {}).get("trips_touch_after") or {}).get("read_only")
        if trips:
            n = trips["round_trips"] if "round_trips" in trips else trips["statements"]
            out.append(target(name, n, 1.0, n == 1, f"{n:g}"))
        else:
            out.append(target(name, None, 1.0, False, "n/a"))
    for key, label, limit in (("sqlite", "SQLiteStore, 4 processes on one file", 5000.0),
                              ("postgres", "PostgresStore, 4 processes on one table", 3000.0)):
        processes = (st.get(key) or {}).get("processes")
        name = f"{label} >= {limit:,.0f} cycles/s (equal mix)"
        if processes:
            rate = processes["mix"]["cycles_per_s"]
            out.append(target(name, rate, limit, rate >= limit, f"{rate:,.0f}/s"))
        else:
            out.append(target(name, None, limit, False, "n/a"))
    return out


E2E_ROWS = (
    ("plain", "plain: the page, no session cookie", "plain"),
    ("fair", "fair limit: same Cookie in, same headers out", "plain"),
    ("sessions", "sessions.py (MemoryStore, 1 change/request)", "plain"),
    ("floor", "floor's work inline, same headers", "plain"),
    ("express_plain", "express: the page, no session cookie", "express_plain"),
    ("express_fair", "express: fair limit", "express_plain"),
    ("express_session", "express-session 1.19 (MemoryStore)", "express_plain"),
)


def e2e_table(run: Dict[str, Any], title: str) -> List[str]:
    v, r = run["variants"], run["ratios"]

    def ratio(key: str) -> str:
        if key not in r:
            return f"{'1.000':>21}" if key.split("/")[0] == key.split("/")[1] else f"{'':>21}"
        q = r[key]["quartiles"]
        return f"{r[key]['median']:>7.3f} [{q[0]:.2f}-{q[1]:.2f}]"

    out = [title, f"   {'server':<48}{'req/s':>8}{'vs plain [middle half]':>23}{'vs fair [middle half]':>23}"
                  f"{'CPU us/req':>12}"]
    for key, label, plain in E2E_ROWS:
        if key not in v:
            continue
        fair = "fair" if plain == "plain" else "express_fair"
        vs_fair = ratio(f"{key}/{fair}") if key not in (plain, fair) else f"{'':>21}"
        out.append(f"   {label:<48}{v[key]['rps']:>8.0f}  {ratio(f'{key}/{plain}') if key != plain else f'{1:>7.3f}':<21}"
                   f"  {vs_fair:<21}{v[key]['server_cpu_us']:>12.1f}")
    if "advantage/plain" in r:
        out.append(f"   side by side: sessions.py/plain {r['sessions/plain']['median']:.3f} vs express-session/plain "
                   f"{r['express_session/express_plain']['median']:.3f}; "
                   f"sessions.py/fair {r['sessions/fair']['median']:.3f} vs express-session/fair "
                   f"{r['express_session/express_fair']['median']:.3f}")
    return out


def stores_table(st: Dict[str, Any]) -> List[str]:
    out = [f"   {'store: us/request (round trips)':<40}" + "".join(f"{k.replace('_', '-'):>20}" for k in stores.KINDS)]
    rows = (("sqlite", "SQLiteStore (one file, WAL)", ("SQLiteStore",)),
            ("redis", "RedisStore (redis-server, loopback)", ("RedisStore", "redis")),
            ("flask_session", "Flask-Session 0.8 Redis backend", ("flask_session", "redis")),
            ("postgres", "PostgresStore (psycopg 3 pool)", ("postgres",)),
            ("cluster", "RedisStore, 3-primary Redis Cluster", ("cluster",)))
    for name, label, reasons in rows:
        part = st.get(name)
        if not part:
            why = next((st["missing"][r] for r in reasons if r in st["missing"]), "n/a")
            out.append(f"   {label:<40}{why}")
            continue
        cells = []
        for kind in stores.KINDS:
            trips = part["trips"][kind]
            n = trips["round_trips"] if "round_trips" in trips else trips["statements"]
            cells.append(f"{part['us'][kind]:>10.1f} ({n:g})")
        out.append(f"   {label:<40}" + "".join(f"{c:>20}" for c in cells))
    for name, label in (("sqlite", "SQLiteStore"), ("redis", "RedisStore")):
        trips = ((st.get(name) or {}).get("trips_touch_after") or {}).get("read_only")
        if trips:
            n = trips["round_trips"] if "round_trips" in trips else trips["statements"]
            what = "+".join(sorted(trips["commands"] if "commands" in trips else trips["kinds"]))
            out.append(f"   {label} with touch_after={stores.TOUCH_AFTER}: read-only "
                       f"{st[name]['us_read_only_touch_after']:.1f} us, {n:g} round trip(s) ({what}); "
                       f"without: {st[name]['us']['read_only']:.1f} us")
    out.append("   round trips: Redis = client sends (a pipeline is one); SQLite and PostgreSQL = statements executed "
               "(BEGIN, COMMIT and the write's prune batch included)")
    for name in ("redis", "flask_session"):
        part = st.get(name)
        if part:
            out.append(f"   {name} commands per request: " + "; ".join(
                f"{k.replace('_', '-')} {'+'.join(sorted(part['trips'][k]['commands'])) or 'none'}" for k in stores.KINDS))
    vs = st.get("redis_vs_flask_session")
    if vs:
        out.append("   RedisStore / Flask-Session: " + ", ".join(f"{k.replace('_', '-')} {vs[k]:.3f}x" for k in stores.KINDS)
                   + f"; equal mix {vs['mix']:.2f}x")
    for name, label in (("sqlite", "SQLiteStore, 4 processes on one file"),
                        ("postgres", "PostgresStore, 4 processes on one table")):
        for key, p in ((st.get(name) or {}).get("processes") or {}).items():
            out.append(f"   {label}, {key} ({'+'.join(p['kinds'])}): "
                       f"{p['cycles_per_s']:,.0f} cycles/s in total over {p['seconds']:g} s "
                       f"(per process {', '.join(str(c) for c in p['per_process'])})")
    return out


def cycle_lines(c: Dict[str, Any]) -> List[str]:
    us = c["us"]
    out = [
        f"1. Per-request session work, tight loop in process (median of {c['reps']} interleaved repetitions)",
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
    ]
    return out


def inprocess_lines(c: Dict[str, Any], ip: Dict[str, Any], cold: Dict[str, Any], e: Dict[str, Any]) -> List[str]:
    us = c["us"]
    out = [
        f"2. In-process full request: real handlers over loopback sockets, no client process (median of blocks of "
        f"interleaved rounds; warm {ip['blocks']}x{ip['rounds']}, cold {cold['blocks']}x{cold['rounds']})",
        f"   {'us/request':<52}{'warm':>10}{'cold':>10}   {'server CPU, end to end':>24}",
    ]
    pv, lv = e["pingpong"]["variants"], e["pipelined"]["variants"]
    for key, label in (("plain", "plain"), ("fair", "fair limit (same Cookie, same headers)"),
                       ("sessions", "sessions.py"), ("floor", "floor's work inline")):
        out.append(f"   {label:<52}{ip['us'][key]:>10.1f}{cold['us'][key]:>10.1f}   "
                   f"{pv[key]['server_cpu_us']:>12.1f} ping-pong{lv[key]['server_cpu_us']:>8.1f} pipelined")
    tight_s, tight_f = us["sessions_modified"], us["floor"]
    work = {name: [pv[name]["server_cpu_us"] - pv["fair"]["server_cpu_us"],
                   lv[name]["server_cpu_us"] - lv["fair"]["server_cpu_us"]] for name in ("sessions", "floor")}
    out += [
        f"   {'session work (sessions - fair)':<52}{ip['session_work_us']:>10.1f}{cold['session_work_us']:>10.1f}   "
        f"{work['sessions'][0]:>12.1f}{work['sessions'][1]:>18.1f}   (tight loop {tight_s:.1f})",
        f"   {'floor work (floor - fair)':<52}{ip['floor_work_us']:>10.1f}{cold['floor_work_us']:>10.1f}   "
        f"{work['floor'][0]:>12.1f}{work['floor'][1]:>18.1f}   (tight loop {tight_f:.1f})",
        f"   {'session work / floor work (per block; middle half)':<52}{ip['ratio']:>10.2f}{cold['ratio']:>10.2f}   "
        f"{work['sessions'][0] / work['floor'][0]:>12.2f}{work['sessions'][1] / work['floor'][1]:>18.2f}",
        f"   {'':<52}{ip['ratio_quartiles'][0]:>5.2f}-{ip['ratio_quartiles'][1]:.2f}"
        f"{cold['ratio_quartiles'][0]:>5.2f}-{cold['ratio_quartiles'][1]:.2f}",
    ]
    return out


def e2e_lines(e: Dict[str, Any]) -> List[str]:
    out = [
        "3. End to end: each server in its own process, one client process alternating request by request "
        f"(express: {e['express']})",
    ]
    pp, pl = e["pingpong"], e["pipelined"]
    out += e2e_table(pp, f"   a. ping-pong, one request in flight ({pp['blocks']} blocks of {pp['rounds']} rounds; "
                         "ratios: median of per-block ratios)")
    out += e2e_table(pl, f"   b. server-bound, {pl['depth']} requests pipelined per connection ({pl['blocks']} blocks of "
                         f"{pl['rounds']} rounds)")
    if "express_session" in pl["variants"]:
        x = pl["variants"]["express_session"]
        out.append(f"   express-session kept {x['views_gained']} of {x['requests']} pipelined updates "
                   "(it saves after responding, so the next pipelined request can load the old record)")
    return out


def store_lines(s: Dict[str, Any]) -> List[str]:
    out = [
        "5. MemoryStore scale (bytes beyond the JSON text = store structures + the id string)",
        f"   {'sessions':>10}{'JSON B':>8}{'B/sess fill':>13}{'B/sess steady':>15}{'get/s':>11}{'set/s':>11}"
        f"{'prune 1k ms':>13}",
    ]
    for size in s["sizes"]:
        out.append(
            f"   {size['n']:>10,}{size['json_text_bytes']:>8.0f}{size['overhead_after_fill']:>13.0f}"
            f"{size['overhead_steady']:>15.0f}{size['get_per_s']:>11,.0f}{size['set_per_s']:>11,.0f}"
            f"{size['prune_ms']:>13.3f}"
        )
    return out


def table(results: Dict[str, Any]) -> str:
    """The report of the sections that ran, in their order."""
    m = results["machine"]
    load = f", load {m['load_1min']:.1f}" if m.get("load_1min") is not None else ""
    out = [
        f"sessions.py benchmark ({results['mode']}) -- {m['cpus']} CPUs{load}, {m['cpu']}, "
        f"{m['implementation']} {m['python']}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(results['started']))}, "
        f"{results['sessions_py']}" + (f", sections: {', '.join(results['only'])}" if results.get("only") else ""),
    ]
    parts = []
    if "cycle" in results:
        parts.append(cycle_lines(results["cycle"]))
    if all(name in results for name in ("cycle", "inprocess", "inprocess_cold", "e2e")):
        parts.append(inprocess_lines(results["cycle"], results["inprocess"], results["inprocess_cold"], results["e2e"]))
    if "e2e" in results:
        parts.append(e2e_lines(results["e2e"]))
    if "stores" in results:
        parts.append(["4. Persistent stores: the per-request cycle (open + commit) by request kind"]
                     + stores_table(results["stores"]))
    if "store" in results:
        parts.append(store_lines(results["store"]))
    if "cycle" in results:
        c = results["cycle"]
        parts.append([f"6. Signing: sign {c['sign_per_s']:,.0f}/s, unsign {c['unsign_per_s']:,.0f}/s"])
    if "frameworks" in results:
        parts.append(["7. Frameworks: req/s, latency and server CPU per request under real servers and wrk, "
                      "against each framework's own session options"] + frameworks.table(results["frameworks"]))
    for part in parts:
        out += [""] + part
    out += ["", "Targets"]
    for t in results["targets"]:
        out.append(f"   {'MET   ' if t['met'] else 'MISSED'}  {t['target']:<78}{t['shown']:>12}")
    failed = [name for name, ok in results["checks"].items() if not ok]
    out += ["", "Checks (each benchmark exercised its code path): " + ("all passed" if not failed else "FAILED: " + ", ".join(failed))]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", "--tiny", action="store_true", help="a seconds-long run (figures meaningless)")
    parser.add_argument("--only", metavar="SECTION[,SECTION]", help="run only these sections, e.g. --only frameworks "
                        "(cycle, inprocess, inprocess_cold, e2e, stores, store, frameworks)")
    args = parser.parse_args(argv)
    p = QUICK if args.quick else FULL
    results: Dict[str, Any] = {"mode": "quick" if args.quick else "full", "started": time.time(), "machine": machine(),
                               "sessions_py": os.path.relpath(sessions.__file__)}
    sections = {
        "cycle": lambda: cycle.run(p["cycle_reps"], p["cycle_seconds"]),
        "inprocess": lambda: inprocess.run(p["inproc_blocks"], p["inproc_rounds"]),
        "inprocess_cold": lambda: inprocess.run(p["cold_blocks"], p["cold_rounds"], cold=True),
        "e2e": lambda: e2e.run(p["pp_blocks"], p["pp_rounds"], p["pl_blocks"], p["pl_rounds"], p["depth"]),
        "stores": lambda: stores.run(p["stores_blocks"], p["stores_rounds"], p["trips_n"], p["mp_seconds"],
                                     p["mp_sessions"]),
        "store": lambda: store.run(p["sizes"], p["sample"], p["prune_reps"]),
        "frameworks": lambda: frameworks.run(p["fw_rounds"], p["fw_seconds"], p["fw_workers"], p["fw_sessions"],
                                             p["fw_limit"]),
    }
    if args.only:
        only = [name.strip() for name in args.only.split(",")]
        unknown = [name for name in only if name not in sections]
        if unknown:
            parser.error(f"unknown section {unknown[0]!r}; the sections: {', '.join(sections)}")
        sections = {name: section for name, section in sections.items() if name in only}
        results["only"] = list(sections)
    results["section_seconds"] = {}
    for name, section in sections.items():
        start = time.time()
        results[name] = section()
        results["section_seconds"][name] = round(time.time() - start, 1)
    results["checks"] = {}
    for part in sections:
        results["checks"].update(results[part].pop("checks"))
    results["targets"] = targets(results)
    results["seconds"] = round(time.time() - results["started"], 1)
    print(table(results))
    print(f"(total {results['seconds']} s)")
    print(json.dumps(results, separators=(",", ":")), flush=True)
    return results


if __name__ == "__main__":
    main()
