"""Where a job's start goes: per program it compiles, trace / lower / compile seconds and the persistent cache.

    python scripts/bench_compile.py                                  # tiny job, naive realtime bid
    python scripts/bench_compile.py --num-evals 256 --max-timesteps 256 --methods naive
    python scripts/bench_compile.py --same-config                    # second process: the very same job

For each method, two fresh processes run one job exactly as ``python -m rtc_sweep`` does (``evaluate``) against a
new, empty cache folder (a temporary one): the first process fills it, the second one (by default with another
seed, delay profile and execute horizon: the same static spec) should load every program from it. Each program is
named as JAX names it (``rollout``, ``init_params``; ``<eager>`` lumps the small op-by-op programs together) and
read from JAX's own monitoring events (``/jax/core/compile/*_duration``, ``/jax/compilation_cache/*``), so it
counts whatever a job compiles, jitted or not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY = ["checkpoint=random", "model=small"]
# The second process: same static spec (method, model, level, T, batch), every traced value changed.
SECOND = ["seed=7", "delay_profile=uniform", "execute_policy.execute_horizon=3"]


def child(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    from rtc_sweep.runtime import CompileLog, configure_host_devices, enable_compilation_cache

    configure_host_devices()
    from hydra import compose, initialize_config_dir

    from rtc_sweep.sweep.config import register_configs, to_job_config

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "rtc_sweep" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    run = to_job_config(cfg).run
    cache = enable_compilation_cache(args.cache_dir)
    import jax

    if args.min_compile_secs is not None:  # e.g. 1.0: what rtc_sweep set before, to compare in one run
        jax.config.update("jax_persistent_cache_min_compile_time_secs", args.min_compile_secs)

    jax.numpy.zeros(())  # start the backend outside the measurement
    t_import = time.perf_counter() - t0
    from rtc_sweep.sweep.evaluate import evaluate

    with CompileLog() as log:
        t1 = time.perf_counter()
        evaluate(run, progress=False)
        t_eval = time.perf_counter() - t1
    out = {
        "import_s": t_import,
        "evaluate_s": t_eval,
        "wall_s": time.perf_counter() - t0,
        "cache_files": len(list(Path(cache).glob("*"))),
        "programs": [p._asdict() for p in log.programs],
    }
    print("BENCH_JSON " + json.dumps(out))


def summarise(programs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row for the rollout (and the latency step's sampler), one for the ~180 op-by-op programs of a job's set-up
    (loading the level, initialising a random policy: ``jit(add)``, ``jit(_truncated_normal)`` ...)."""
    rows: dict[str, dict[str, Any]] = {}
    for p in programs:
        name = p["name"] if p["name"] in ("rollout", "sample") else "<op-by-op: level, params>"
        r = rows.setdefault(name, {"name": name, "n": 0, "trace_s": 0.0, "lower_s": 0.0, "compile_s": 0.0, "st": {}})
        r["n"] += 1
        for k in ("trace_s", "lower_s", "compile_s"):
            r[k] += p[k]
        r["st"][p["cache"]] = r["st"].get(p["cache"], 0) + 1
    return sorted(rows.values(), key=lambda r: -(r["trace_s"] + r["lower_s"] + r["compile_s"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["naive", "realtime", "bid"])
    ap.add_argument("--num-evals", type=int, default=2)
    ap.add_argument("--max-timesteps", type=int, default=8)
    ap.add_argument("--same-config", action="store_true", help="the second process runs the very same job")
    ap.add_argument("--cache-dir", help="use (and keep) this cache folder instead of a fresh temporary one")
    ap.add_argument("--min-compile-secs", type=float, help="override JAX's threshold for caching a program")
    ap.add_argument("--json", type=Path, help="also write the raw measurements here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra config overrides for both processes (key=value)")
    args = ap.parse_args()
    if args.child:
        return child(args)

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
        for method in args.methods:
            cache = args.cache_dir or str(Path(tmp) / method)  # fresh per method: nothing shared across methods
            base = [*TINY, f"method={method}", f"num_evals={args.num_evals}", f"max_timesteps={args.max_timesteps}"]
            for proc in ("first", "second"):
                extra = SECOND if proc == "second" and not args.same_config else []
                opt = [] if args.min_compile_secs is None else ["--min-compile-secs", str(args.min_compile_secs)]
                cmd = [sys.executable, __file__, "--child", "--cache-dir", cache, *opt, "--", *base, *extra,
                       *args.overrides]  # fmt: skip
                t0 = time.perf_counter()
                res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
                wall = time.perf_counter() - t0
                line = next((x for x in res.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
                if res.returncode != 0 or line is None:
                    sys.exit(f"{method} {proc} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
                out = json.loads(line.removeprefix("BENCH_JSON "))
                out.update(method=method, process=proc, process_wall_s=wall)
                results.append(out)
                print(f"# {method} {proc}: {wall:.1f} s", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))

    print(f"\nnum_evals={args.num_evals} max_timesteps={args.max_timesteps}; second process: "
          f"{'same job' if args.same_config else ' '.join(SECOND)}"
          f"{'; both then: ' + ' '.join(args.overrides) if args.overrides else ''}")  # fmt: skip
    head = f"| {'method':8} | {'process':7} | {'program':26} | {'n':>4} | {'trace s':>7} | {'lower s':>7} | "
    print(head + f"{'compile s':>9} | cache")
    print("|" + "|".join("-" * (len(c) + 2) for c in head.strip("| ").split(" | ")) + "|-----------|-------|")
    for r in results:
        for s in summarise(r["programs"]):
            st = " ".join(f"{k}:{v}" for k, v in sorted(s["st"].items()))
            print(f"| {r['method']:8} | {r['process']:7} | {s['name'][:26]:26} | {s['n']:>4} | {s['trace_s']:7.2f} | "
                  f"{s['lower_s']:7.2f} | {s['compile_s']:9.2f} | {st}")  # fmt: skip
        tot = sum(p["trace_s"] + p["lower_s"] + p["compile_s"] for p in r["programs"])
        print(f"| {r['method']:8} | {r['process']:7} | {'TOTAL trace+lower+compile':26} | "
              f"{len(r['programs']):>4} | {tot:7.2f} | evaluate {r['evaluate_s']:.1f} s, import+setup "
              f"{r['import_s']:.1f} s, process {r['process_wall_s']:.1f} s, "
              f"cache files {r['cache_files']}")  # fmt: skip


if __name__ == "__main__":
    main()
