"""Frameworks: sessions.py inside Flask, FastAPI and Django, against each framework's own session options,
under real servers and a real load generator (issue 21).

Servers: gunicorn sync workers for Flask and Django, uvicorn (with uvloop and httptools, ``uvicorn[standard]``)
for FastAPI, the same number of worker processes for every variant, each started on a free 127.0.0.1 port
and stopped by its PID. The apps are bench/apps/ (one module per framework, the variant chosen by the
``BENCH_APP`` environment variable); each server prints its own session configuration (``/config``),
which the report shows.

Load: ``wrk`` (one thread, ``2 x workers`` connections; gunicorn's sync workers close the connection
after each response, as they do in production, so wrk reconnects; uvicorn keeps it alive) with
bench/frameworks.lua, which sends each request with one of the variant's seeded sessions (round-robin
over ``sessions`` of them, between three neighbour cookies), checks every response from its body and
headers, and reports p50 and p99 latency. Three request mixes: ``read`` (every request reads the
session), ``write`` (every request writes one key), ``mix`` (untouched, read, write and new in turn, the
store section's equal mix).

Interleaving: a round runs every (variant, mix) of a framework once, for ``seconds``, in an order
shuffled every round; each figure is the median over rounds, and each ratio the median of the
per-round ratios (both runs of a ratio are from the same round). Server CPU per request is the CPU time
(utime + stime from /proc) of the server's process tree (master and workers) over the run, divided by the
requests wrk completed.

``python3 bench/frameworks.py --profile FRAMEWORK VARIANT MIX [SECONDS]`` profiles one variant's worker instead
(cProfile inside the worker while wrk runs; see ``profile``), and ``--inprocess FRAMEWORK VARIANT MIX`` calls
one variant's app in process, without a server, for its CPU per request (see ``inprocess``).

Sessions are seeded before the rounds: through the app's ``/seed`` page (the framework's own code writes
them), except for sessions.py's MemoryStore, whose records are made here and loaded by every worker at
start, since each worker process holds its own MemoryStore.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

if __name__ == "__main__":  # python3 bench/frameworks.py --profile ...: this sessions.py and bench package
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sessions  # noqa: E402

from bench import ROOT, child_env, record_text, timing  # noqa: E402
from bench.cycle import NEIGHBOURS, SECRET, cookie_header  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "frameworks.lua")
MIXES = ("read", "write", "mix")
MIX_LABELS = {"read": "read-only", "write": "modifying", "mix": "equal mix"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# framework -> how it is served, its session cookie's name, its variants (name, label) and, per store, the
# server-side peer that sessions.py's variant on the same store is compared with
FRAMEWORKS: Dict[str, Dict[str, Any]] = {
    "flask": {
        "label": "Flask", "server": "gunicorn", "app": "bench.apps.flask_app:app", "cookie": "session",
        "variants": [("none", "no session"), ("flask_cookie", "Flask's cookie session"),
                     ("flask_session_redis", "Flask-Session 0.8, Redis"), ("sessions_memory", "sessions.py, Memory"),
                     ("sessions_sqlite", "sessions.py, SQLite"), ("sessions_redis", "sessions.py, Redis")],
        "peers": {"redis": "flask_session_redis"},
    },
    "fastapi": {
        "label": "FastAPI", "server": "uvicorn", "app": "bench.apps.fastapi_app:app", "cookie": "session",
        "variants": [("none", "no session"), ("starlette_cookie", "Starlette SessionMiddleware (cookie)"),
                     ("starsessions_redis", "starsessions 2.2, Redis"), ("sessions_memory", "sessions.py, Memory"),
                     ("sessions_sqlite", "sessions.py, SQLite"), ("sessions_redis", "sessions.py, Redis"),
                     ("sessions_async_redis", "sessions.py, async Redis")],
        "peers": {"redis": "starsessions_redis"},
    },
    "django": {
        "label": "Django", "server": "gunicorn", "app": "bench.apps.django_app:application", "cookie": "sessionid",
        # sessions.py on Memory is not in the list for Django, but its no-session target needs it
        "variants": [("none", "no session"), ("django_db", "Django db backend, SQLite"),
                     ("django_cache_redis", "Django cache backend, Redis"),
                     ("django_signed_cookies", "Django signed_cookies"), ("sessions_memory", "sessions.py, Memory"),
                     ("sessions_sqlite", "sessions.py, SQLite"), ("sessions_redis", "sessions.py, Redis")],
        "peers": {"sqlite": "django_db", "redis": "django_cache_redis"},
    },
}
SHARED_STORES = {"flask_session_redis", "starsessions_redis", "django_db", "django_cache_redis",
                 "sessions_sqlite", "sessions_redis", "sessions_async_redis"}  # every worker sees every write
COOKIE_SESSIONS = {"flask_cookie", "starlette_cookie", "django_signed_cookies"}


# Servers ########################################################################################################


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> List[int]:
    """``pid`` and its descendants, from /proc (a worker's parent is the master)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def cpu_seconds(pids: List[int]) -> float:
    """utime + stime of ``pids`` (from /proc/PID/stat), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


class AppServer:
    """One variant's server (gunicorn or uvicorn with ``workers`` processes) on a free port."""

    def __init__(self, framework: str, variant: str, workers: int, config: Dict[str, Any], log: str) -> None:
        spec = FRAMEWORKS[framework]
        self.framework, self.variant, self.workers = framework, variant, workers
        self.port = free_port()
        env = child_env()
        env["BENCH_APP"] = json.dumps({"variant": variant, **config})
        if spec["server"] == "gunicorn":
            argv = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "sync", "--no-control-socket",
                    "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning", spec["app"]]
        else:
            argv = [sys.executable, "-m", "uvicorn", spec["app"], "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
        self.argv = argv
        # uvicorn serves a single worker in its own process; otherwise a master and its workers
        self.processes = 1 if spec["server"] == "uvicorn" and workers == 1 else workers + 1
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the app answers and every worker process is up (a master with ``workers`` children, or the
        single process uvicorn runs for one worker)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.framework} {self.variant} exited: see {self.log}")
            try:
                if self.get("/config")[0] == 200 and len(process_tree(self.proc.pid)) >= self.processes:
                    self.config_text = self.get("/config")[2]
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.framework} {self.variant} did not start: see {self.log}")
            time.sleep(0.05)

    def get(self, path: str, cookie: Optional[str] = None) -> Tuple[int, List[Tuple[str, str]], str]:
        request = urllib.request.Request(self.url + path, headers={"Cookie": cookie} if cookie else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.getheaders(), response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, list(e.headers.items()), e.read().decode(errors="replace")

    def cpu(self) -> float:
        return cpu_seconds(process_tree(self.proc.pid))

    def stop(self) -> None:
        """SIGTERM to the master (gunicorn and uvicorn stop their workers), SIGKILL to what is left."""
        tree = process_tree(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pid in tree[1:]:  # workers the master left behind (these PIDs, and only these)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def memory_seeds(name: str, count: int) -> Tuple[List[List[Any]], List[str]]:
    """``count`` sessions made by a manager with the framework's cookie name and secret over a MemoryStore:
    their records (``[sid, record, expires]``, loaded by every worker) and their Cookie headers."""
    from bench.apps import LIFETIME, SEEDED

    manager = sessions.SessionManager(SECRET, store=sessions.MemoryStore(default_ttl=LIFETIME), name=name,
                                      cookie={"max_age": LIFETIME})
    seeds, cookies = [], []
    for _ in range(count):
        session = manager.open(None)
        session.update(SEEDED)
        pair = manager.commit(session)[0].split(";", 1)[0]
        stored = manager.store.get(session.id)
        seeds.append([session.id, record_text(stored), stored[1] if isinstance(stored, tuple) else None])
        cookies.append(cookie_header(*pair.split("=", 1)))
    return seeds, cookies


def seed_through_app(server: AppServer, name: str, count: int) -> List[str]:
    """``count`` sessions written by the app's own session code (``/seed``); their Cookie headers."""
    cookies = []
    for _ in range(count):
        status, headers, _ = server.get("/seed", "; ".join(NEIGHBOURS))
        pair = next((v.split(";", 1)[0] for n, v in headers
                     if n.lower() == "set-cookie" and v.startswith(name + "=")), None)
        if status != 200 or pair is None:
            raise RuntimeError(f"{server.framework} {server.variant}: /seed gave {status} and no {name} cookie")
        cookies.append(cookie_header(*pair.split("=", 1)))
    return cookies


def prepare(framework: str, variant: str, config: Dict[str, Any], count: int) -> Optional[List[str]]:
    """What a variant needs before its app starts: sessions.py's MemoryStore gets ``count`` seeded records in
    the file ``config["seed"]`` (their Cookie headers are returned), Django's db backend its table."""
    cookies = None
    if variant == "sessions_memory":
        seeds, cookies = memory_seeds(FRAMEWORKS[framework]["cookie"], count)
        with open(config["seed"], "w") as f:
            json.dump(seeds, f)
    if framework == "django" and variant == "django_db":
        env = dict(child_env(), BENCH_APP=json.dumps({"variant": variant, **config, "profile": None}))
        subprocess.run([sys.executable, "-m", "bench.apps.django_app", "migrate"], cwd=ROOT, env=env, check=True,
                       timeout=120)
    return cookies


def session_cookies(server: AppServer, prepared: Optional[List[str]], count: int) -> List[str]:
    """The Cookie headers of a started variant: the prepared ones, the neighbours alone for no session, or
    sessions seeded through the app."""
    if prepared is not None:
        return prepared
    if server.variant == "none":
        return ["; ".join(NEIGHBOURS)] * count
    return seed_through_app(server, FRAMEWORKS[server.framework]["cookie"], count)


# Load ###########################################################################################################


class Wrk:
    """One wrk process against ``server`` (started at once); ``result()`` waits for it and returns its
    BENCHJSON tallies with req/s, latency and the server's CPU per request over the run."""

    def __init__(self, server: AppServer, cookie_file: str, mix: str, seconds: int, limit: int,
                 connections: int) -> None:
        self.server, self.mix, self.seconds, self.connections = server, mix, seconds, connections
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", LUA, server.url, "--",
                cookie_file, mix, str(limit)]
        self.cpu_before = server.cpu()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> Dict[str, Any]:
        try:
            stdout, stderr = self.proc.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        cpu = self.server.cpu() - self.cpu_before
        line = next((l for l in stdout.splitlines() if l.startswith("BENCHJSON ")), None)
        if self.proc.returncode or line is None:
            raise RuntimeError(f"wrk failed ({self.proc.returncode}) on {self.server.framework} {self.server.variant} "
                               f"{self.mix}: {stderr or stdout}")
        out = json.loads(line[len("BENCHJSON "):])
        out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
        out["cpu_us"] = cpu * 1e6 / max(out["requests"], 1)
        out["connections"] = self.connections
        return out


class Framework:
    """One framework's servers, seeded sessions and cookie files, for the duration of its rounds."""

    def __init__(self, name: str, workers: int, sessions_per_run: int, tmp: str, redis_port: Optional[int],
                 missing: Dict[str, str]) -> None:
        self.name, self.spec = name, FRAMEWORKS[name]
        self.servers: Dict[str, AppServer] = {}
        self.cookie_files: Dict[str, str] = {}
        self.cookies: Dict[str, List[str]] = {}
        variants = [v for v, _ in self.spec["variants"] if v not in missing]
        prepared: Dict[str, Optional[List[str]]] = {}
        try:
            for variant in variants:
                config: Dict[str, Any] = {"redis_port": redis_port, "sqlite": os.path.join(tmp, f"{name}-{variant}.db"),
                                          "seed": os.path.join(tmp, f"{name}-{variant}.seed.json")}
                prepared[variant] = prepare(name, variant, config, sessions_per_run)
                self.servers[variant] = AppServer(name, variant, workers, config, os.path.join(tmp, f"{name}.log"))
            for variant, server in self.servers.items():
                server.wait_ready()
                self.cookies[variant] = session_cookies(server, prepared[variant], sessions_per_run)
                self.cookie_files[variant] = os.path.join(tmp, f"{name}-{variant}.cookies")
                with open(self.cookie_files[variant], "w") as f:
                    f.write("\n".join(self.cookies[variant]) + "\n")
        except BaseException:
            self.stop()
            raise

    def views(self, variant: str) -> List[int]:
        """The stored view counter of each seeded session, read through the app (untimed)."""
        out = []
        for cookie in self.cookies[variant]:
            body = self.servers[variant].get("/read?k=0", cookie)[2]
            out.append(int(body.rsplit("views=", 1)[1]))
        return out

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def measure(fw: Framework, rounds: int, seconds: int, limit: int, connections: int) -> Dict[str, Any]:
    """Warm up, then ``rounds`` rounds of every (variant, mix) in a shuffled order, one run at a time; every
    run's figures. With ``limit`` (the quick mode: a smoke run, figures meaningless) there is no warm-up and
    the variants of a mix run all at once."""
    samples: Dict[str, Dict[str, List[Dict[str, Any]]]] = {v: {m: [] for m in MIXES} for v in fw.servers}

    def start(variant: str, mix: str, duration: int) -> Wrk:
        return Wrk(fw.servers[variant], fw.cookie_files[variant], mix, duration, limit, connections)

    if limit:
        for mix in MIXES:
            batch = {variant: start(variant, mix, seconds) for variant in fw.servers}
            for variant, load in batch.items():
                samples[variant][mix].append(load.result())
    else:
        runs = [(variant, mix) for variant in fw.servers for mix in MIXES]
        for variant in fw.servers:  # warm-up: every worker serves every path (the equal mix) once it is up
            samples[variant]["mix"].append({**start(variant, "mix", 1).result(), "warm_up": True})
        rng = random.Random(21)
        for _ in range(rounds):
            order = runs[:]
            rng.shuffle(order)
            for variant, mix in order:
                samples[variant][mix].append(start(variant, mix, seconds).result())
    writes: Dict[str, Dict[str, int]] = {v: {} for v in fw.servers}
    for variant in fw.servers:
        for mix in MIXES:
            for run in samples[variant][mix]:
                for k, n in run["writes"].items():
                    writes[variant][k] = writes[variant].get(k, 0) + n
    return {"samples": samples, "writes": writes}


# The run ##########################################################################################################


def summarize(spec: Dict[str, Any], samples: Dict[str, Dict[str, List[Dict[str, Any]]]]) -> Dict[str, Any]:
    """Per variant and mix: medians over the measured rounds; per store and mix: sessions.py / peer req/s
    (median of per-round ratios), and per mix: sessions.py Memory / no session."""
    out: Dict[str, Any] = {"variants": {}, "ratios": {}}
    measured = {v: {m: [r for r in runs if not r.get("warm_up")] for m, runs in mixes.items()}
                for v, mixes in samples.items()}
    for variant, mixes in measured.items():
        out["variants"][variant] = {mix: {
            "rps": timing.median([r["rps"] for r in runs]),
            "p50_ms": timing.median([r["latency_us"]["p50"] for r in runs]) / 1000,
            "p99_ms": timing.median([r["latency_us"]["p99"] for r in runs]) / 1000,
            "cpu_us": timing.median([r["cpu_us"] for r in runs]),
            "requests": sum(r["requests"] for r in runs),
        } for mix, runs in mixes.items()}

    def ratio(num: str, den: str, mix: str) -> float:
        return timing.median_ratio([1 / r["rps"] for r in measured[den][mix]], [1 / r["rps"] for r in measured[num][mix]])

    def cpu_ratio(num: str, den: str, mix: str) -> Optional[float]:
        """None where the CPU clock (10 ms ticks) saw nothing: the quick mode's runs of a few requests."""
        pairs = [(a["cpu_us"], b["cpu_us"]) for a, b in zip(measured[num][mix], measured[den][mix]) if b["cpu_us"]]
        return timing.median_ratio([a for a, _ in pairs], [b for _, b in pairs]) if pairs else None

    pairs = [(ours, peer) for store, peer in spec["peers"].items()
             for ours in (f"sessions_{store}", f"sessions_async_{store}")] + [("sessions_memory", "none")]
    out["cpu_ratios"] = {}
    for ours, other in pairs:
        if ours in measured and other in measured:
            out["ratios"][f"{ours}/{other}"] = {mix: ratio(ours, other, mix) for mix in MIXES}
            out["cpu_ratios"][f"{ours}/{other}"] = {mix: cpu_ratio(ours, other, mix) for mix in MIXES}
    return out


def check(name: str, fw: Framework, samples: Dict[str, Dict[str, List[Dict[str, Any]]]],
          writes: Dict[str, Dict[str, int]], final_views: Dict[str, List[int]]) -> Dict[str, bool]:
    """Each run exercised the path it names: every response a 200 of its kind, sessions found, new sessions
    sent their cookie, untouched requests none (sessions.py), and each write kept (shared stores)."""
    checks: Dict[str, bool] = {}
    for variant, mixes in samples.items():
        runs = [r for m in MIXES for r in mixes[m]]
        prefix = f"frameworks_{name}_{variant}"
        checks[f"{prefix}_all_200"] = all(
            r["bad"] == 0 and r["ok"] == r["responses"] > 0 and not any(r["errors"].values()) for r in runs)
        reads = [r for r in runs if r["kinds"].get("read") or r["kinds"].get("write")]
        if variant == "none":
            checks[f"{prefix}_no_cookie"] = all(not r["set_cookie"] for r in runs)
            continue
        # every read and write request found its seeded session (views >= 1)
        checks[f"{prefix}_sessions_found"] = bool(reads) and all(
            r["found"].get(k, 0) == r["kinds"].get(k, 0) for r in reads for k in ("read", "write"))
        mixed = [r for r in mixes["mix"] if r["kinds"].get("new")]
        checks[f"{prefix}_new_sends_cookie"] = bool(mixed) and all(
            r["set_cookie"].get("new", 0) == r["kinds"]["new"] for r in mixed)
        if variant.startswith("sessions_"):
            checks[f"{prefix}_untouched_no_cookie"] = all(r["set_cookie"].get("untouched", 0) == 0 for r in mixed)
        if variant in SHARED_STORES:
            # the seeded sessions' counters grew by the writes the responses reported. Not exactly: a run can
            # end with requests in flight, whose write the server made and wrk did not count (at most one per
            # connection per run); and two requests of one session overlap now and then (one stalled, e.g. on
            # SQLite's write lock, while the others went round all the sessions), and then the later write
            # of the same key wins, as on any store: at most 1% of the writes
            written, connections = writes[variant], max(r["connections"] for r in runs)
            reported, stored = sum(written.values()), sum(final_views[variant]) - len(final_views[variant])
            checks[f"{prefix}_writes_kept"] = 0 < reported * 0.99 <= stored <= reported + connections * len(runs)
        if variant in COOKIE_SESSIONS:
            checks[f"{prefix}_write_sends_cookie"] = all(
                r["set_cookie"].get("write", 0) == r["kinds"].get("write", 0) for r in runs)
    return checks


def run(rounds: int, seconds: int, workers: int, sessions_per_run: int, limit: int = 0,
        only: Optional[List[str]] = None) -> Dict[str, Any]:
    """The section: every framework in turn (its servers up only for its own rounds)."""
    from bench.stores import RedisServer

    connections = 2 * workers
    result: Dict[str, Any] = {"rounds": rounds, "seconds": seconds, "workers": workers, "connections": connections,
                              "sessions": sessions_per_run, "limit": limit, "frameworks": {}, "missing": {},
                              "checks": {}}
    if shutil.which("wrk") is None:
        result["missing"]["wrk"] = "n/a (wrk not installed: apt-get install wrk)"
        return result
    result["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    missing = _missing_variants()
    result["missing"].update({f"{fw}.{v}": why for fw, v, why in missing})
    redis_server = RedisServer() if shutil.which("redis-server") else None
    tmp = tempfile.mkdtemp(prefix="bench-frameworks-")
    try:
        for name in only or list(FRAMEWORKS):
            spec = FRAMEWORKS[name]
            skip = {v: why for fw, v, why in missing if fw == name}
            if redis_server is None:
                skip.update({v: "n/a (redis-server not installed)" for v, _ in spec["variants"] if "redis" in v})
            if any(why.startswith("n/a (" + spec["label"]) for why in skip.values()):
                result["frameworks"][name] = {"missing": next(iter(skip.values()))}
                continue
            fw = Framework(name, workers, sessions_per_run, tmp, redis_server.port if redis_server else None, skip)
            try:
                measured = measure(fw, rounds, seconds, limit, connections)
                final_views = {v: fw.views(v) for v in fw.servers if v in SHARED_STORES}
                configs = {v: fw.servers[v].config_text for v in fw.servers}
                servers = {v: " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(fw.servers[v].argv))
                           for v in list(fw.servers)[:1]}
            finally:
                fw.stop()
            part = summarize(spec, measured["samples"])
            part["config"] = configs
            part["server"] = next(iter(servers.values()))
            part["skipped"] = skip
            # per shared store: writes the responses reported, increments stored, and sessions that have fewer
            # increments stored than reported (lost updates)
            part["writes"] = {v: {"reported": sum(measured["writes"][v].values()),
                                  "stored": sum(final_views[v]) - len(final_views[v]),
                                  "sessions_short": sum(views - 1 < measured["writes"][v].get(str(k + 1), 0)
                                                        for k, views in enumerate(final_views[v]))}
                              for v in final_views}
            result["frameworks"][name] = part
            result["checks"].update(check(name, fw, measured["samples"], measured["writes"], final_views))
    finally:
        if redis_server is not None:
            redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _missing_variants() -> List[Tuple[str, str, str]]:
    """(framework, variant, why) for what cannot run here: a framework or peer package not installed, a
    store class absent from the sessions.py in use."""
    out = []
    needs = {"flask": ["flask", "gunicorn"], "fastapi": ["fastapi", "uvicorn"], "django": ["django", "gunicorn"]}
    for fw, modules in needs.items():
        for module in modules:
            if not _importable(module):
                out += [(fw, v, f"n/a ({FRAMEWORKS[fw]['label']}: {module} not installed)")
                        for v, _ in FRAMEWORKS[fw]["variants"]]
                break
    for fw, variant, module in (("flask", "flask_session_redis", "flask_session"),
                                ("fastapi", "starsessions_redis", "starsessions")):
        if not _importable(module):
            out.append((fw, variant, f"n/a ({module} not installed: requirements-bench.txt)"))
    for store in ("SQLiteStore", "RedisStore"):
        if not hasattr(sessions, store):
            kind = store[:-len("Store")].lower()
            out += [(fw, f"sessions_{kind}", f"n/a (sessions.{store} missing)") for fw in FRAMEWORKS]
    if not hasattr(sessions, "AsyncRedisStore"):
        out.append(("fastapi", "sessions_async_redis", "n/a (no async Redis store in this sessions.py yet)"))
    return out


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


# Targets and table ##################################################################################################


def targets(result: Dict[str, Any], target: Any) -> List[Dict[str, Any]]:
    """Issue 21's targets: sessions.py >= 1.0x the best server-side peer on the same store, every mix; and
    sessions.py Memory within 10% of no session on read-only requests."""
    out = []
    for name, spec in FRAMEWORKS.items():
        part = result["frameworks"].get(name) or {}
        ratios = part.get("ratios") or {}
        for store, peer in spec["peers"].items():
            for mix in MIXES:
                label = f"{spec['label']}, {store}, {MIX_LABELS[mix]}: sessions.py >= 1.0x {dict(spec['variants'])[peer]}"
                # sessions.py's better variant on this store (its async store, where there is one)
                found = [r[mix] for key, r in ratios.items() if key.endswith(f"_{store}/{peer}")]
                r = max(found) if found else None
                out.append(target(label, r, 1.0, r is not None and r >= 1.0, f"{r:.2f}x" if r else "n/a"))
        label = f"{spec['label']}, read-only: sessions.py Memory >= 0.90x no session"
        r = (ratios.get("sessions_memory/none") or {}).get("read")
        out.append(target(label, r, 0.9, r is not None and r >= 0.9, f"{r:.3f}x" if r else "n/a"))
    return out


def table(result: Dict[str, Any]) -> List[str]:
    if "wrk" not in result:
        return ["   " + result["missing"].get("wrk", "n/a")]
    out = [f"   {result['wrk']}: 1 thread, {result['connections']} connections, {result['seconds']} s per run, "
           f"{result['rounds']} interleaved rounds (medians), {result['sessions']} seeded sessions per variant; "
           f"{result['workers']} worker processes for every server"]
    for name, spec in FRAMEWORKS.items():
        part = result["frameworks"].get(name)
        if part is None:
            continue
        if "variants" not in part:
            out.append(f"   {spec['label']}: {part['missing']}")
            continue
        out.append(f"   {spec['label']}: {part['server']}")
        out.append(f"   {'':<40}" + "".join(f"{MIX_LABELS[m]:>34}" for m in MIXES))
        out.append(f"   {'variant':<40}" + f"{'req/s  p50 ms  p99 ms  CPU us/req':>34}" * len(MIXES))
        for variant, label in spec["variants"]:
            figures = part["variants"].get(variant)
            if figures is None:
                out.append(f"   {label:<40}{part['skipped'].get(variant, 'n/a')}")
                continue
            out.append(f"   {label:<40}" + "".join(
                f"{figures[m]['rps']:>10,.0f}{figures[m]['p50_ms']:>8.2f}{figures[m]['p99_ms']:>8.2f}"
                f"{figures[m]['cpu_us']:>8,.0f}" for m in MIXES))
        for key, ratios in part["ratios"].items():
            cpu = part["cpu_ratios"][key]
            out.append(f"   {key}: req/s " + ", ".join(f"{MIX_LABELS[m]} {ratios[m]:.2f}x" for m in MIXES)
                       + "; CPU/request " + ", ".join("n/a" if cpu[m] is None else f"{cpu[m]:.2f}x" for m in MIXES))
        for variant, text in part["config"].items():
            out.append(f"     {variant}: {text.strip()}")
    return out


# Profiling a worker ###############################################################################################


def profile(framework: str, variant: str, mix: str, seconds: int, top: int = 30) -> None:
    """``python3 bench/frameworks.py --profile FRAMEWORK VARIANT MIX [SECONDS]``: one server with one worker
    that profiles itself (cProfile, from its start: imports are in the figures too, under their own names),
    wrk for ``seconds``, then the worker's functions by own time and by cumulative time."""
    import pstats

    from bench.stores import RedisServer

    redis_server = RedisServer()
    tmp = tempfile.mkdtemp(prefix="bench-profile-")
    prefix = os.path.join(tmp, "profile")
    try:
        config: Dict[str, Any] = {"redis_port": redis_server.port, "sqlite": os.path.join(tmp, "store.db"),
                                  "seed": os.path.join(tmp, "seed.json"), "profile": prefix}
        prepared = prepare(framework, variant, config, 64)
        server = AppServer(framework, variant, 1, config, os.path.join(tmp, "server.log"))
        try:
            server.wait_ready()
            cookies = session_cookies(server, prepared, 64)
            cookie_file = os.path.join(tmp, "cookies")
            with open(cookie_file, "w") as f:
                f.write("\n".join(cookies) + "\n")
            out = Wrk(server, cookie_file, mix, seconds, 0, 2).result()
            for pid in process_tree(server.proc.pid)[-1:]:  # the worker (uvicorn: the one process)
                os.kill(pid, signal.SIGUSR2)
            deadline = time.monotonic() + 10
            while not any(name.startswith("profile.") for name in os.listdir(tmp)) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # the file is complete
        finally:
            server.stop()
        print(f"{framework} {variant} {mix}: {out['requests']} requests, {out['rps']:.0f} req/s, "
              f"{out['cpu_us']:.0f} us CPU per request (server process tree)")
        files = [os.path.join(tmp, name) for name in os.listdir(tmp) if name.startswith("profile.")]
        if not files:
            raise SystemExit(f"no profile written: see {os.path.join(tmp, 'server.log')}")
        stats = pstats.Stats(*files)
        print(f"per request: divide by {out['requests']} (plus the requests of seeding and readiness)")
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
    finally:
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def inprocess(framework: str, variant: str, mix: str, n: int, inline: bool = False, sort: Optional[str] = None) -> None:
    """``python3 bench/frameworks.py --inprocess FRAMEWORK VARIANT MIX [N] [inline] [SORT]``: the app called
    in this process, no server and no socket (a WSGI environ or an ASGI scope built here), ``n`` times after
    200 to warm up; prints CPU per request (this process, threads included). ``inline`` runs an ASGI
    sessions.py variant's store calls on the event loop instead of in a worker thread (what an async store
    would save); ``SORT`` (``tottime``, ``cumulative``) profiles the ``n`` requests with cProfile."""
    import io
    import resource

    from bench.stores import RedisServer

    redis_server = RedisServer()
    tmp = tempfile.mkdtemp(prefix="bench-inprocess-")
    try:
        spec = FRAMEWORKS[framework]
        config: Dict[str, Any] = {"variant": variant, "redis_port": redis_server.port,
                                  "sqlite": os.path.join(tmp, "store.db"), "seed": os.path.join(tmp, "seed.json")}
        os.environ["BENCH_APP"] = json.dumps(config)  # before bench.apps is imported: it reads it once
        prepared = prepare(framework, variant, config, 1)
        cookie = prepared[0] if prepared else "; ".join(NEIGHBOURS)
        module, name = spec["app"].split(":")
        app = getattr(__import__(module, fromlist=[name]), name)

        if spec["server"] == "uvicorn":
            import asyncio

            async def acall(path: str, cookie: str) -> Tuple[List[Tuple[str, str]], str]:
                scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                         "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"k=1",
                         "root_path": "", "headers": [(b"host", b"127.0.0.1"), (b"cookie", cookie.encode())],
                         "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
                sent: List[Dict[str, Any]] = []

                async def receive() -> Dict[str, Any]:
                    return {"type": "http.request", "body": b"", "more_body": False}

                async def send(message: Dict[str, Any]) -> None:
                    sent.append(message)

                await app(scope, receive, send)
                return ([(k.decode(), v.decode()) for k, v in sent[0]["headers"]],
                        b"".join(m.get("body", b"") for m in sent[1:]).decode())

            loop = asyncio.new_event_loop()
            try:
                import uvloop

                loop = uvloop.new_event_loop()
            except ImportError:
                pass

            def call(path: str, cookie: str) -> Tuple[List[Tuple[str, str]], str]:
                return loop.run_until_complete(acall(path, cookie))
        else:
            def call(path: str, cookie: str) -> Tuple[List[Tuple[str, str]], str]:
                environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "k=1", "SCRIPT_NAME": "",
                           "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                           "HTTP_HOST": "127.0.0.1", "HTTP_COOKIE": cookie, "REMOTE_ADDR": "127.0.0.1",
                           "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
                           "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True,
                           "wsgi.run_once": False}
                got: Dict[str, Any] = {}

                def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> None:
                    got["headers"] = headers

                body = b"".join(app(environ, start_response)).decode()
                return got["headers"], body

        if variant not in ("none", "sessions_memory"):
            headers, _ = call("/seed", cookie)
            pair = next(v.split(";", 1)[0] for k, v in headers if k.lower() == "set-cookie")
            cookie = cookie_header(*pair.split("=", 1))
        call("/read", cookie)
        if inline:
            layer = app.middleware_stack
            while layer is not None and not isinstance(layer, sessions.ASGISessionMiddleware):
                layer = getattr(layer, "app", None)
            layer.manager.store.blocking = False  # its calls on the event loop (bench only: what the hops cost)
        path = "/" + ("untouched" if mix == "mix" else mix)
        for _ in range(200):
            call(path, cookie)
        profiler = None
        if sort:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        before = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(n):
            _, body = call(path, cookie)
        after = resource.getrusage(resource.RUSAGE_SELF)
        if profiler is not None:
            profiler.disable()
        cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / n * 1e6
        print(f"{framework} {variant} {mix}{' inline' if inline else ''}: {cpu:.1f} us CPU per request in process "
              f"({n} requests; last page: {body.strip()})")
        if profiler is not None:
            import pstats

            pstats.Stats(profiler).sort_stats(sort).print_stats(30)
    finally:
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--inprocess"]:
    extra = sys.argv[6:]
    inprocess(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 3000,
              inline="inline" in extra, sort=next((a for a in extra if a != "inline"), None))

if __name__ == "__main__" and sys.argv[1:2] == ["--profile"]:
    profile(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 5)
