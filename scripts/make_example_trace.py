"""Regenerate ``rtc_sweep/data/example_trace.csv``, the shipped example latency trace (ms).

The trace is synthetic but shaped like a recorded GPU inference log of a small flow policy: a tight body
around 48 ms, a few isolated slow calls (allocator or scheduler hiccups), and one burst of contention
where several consecutive calls run slow. The burst is why trace replay exists: a replayed trace keeps
that correlation in time, which an iid profile cannot. Deterministic: the same file on every run.

    python scripts/make_example_trace.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N = 200
OUT = Path(__file__).resolve().parents[1] / "rtc_sweep" / "data" / "example_trace.csv"


def make_trace(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(mean=np.log(48.0), sigma=0.08, size=N)
    # Warm-up (compilation) calls are left out, as a recording made after the first inference would.
    isolated = rng.choice(N, size=8, replace=False)
    latency[isolated] = rng.uniform(90.0, 260.0, size=isolated.size)
    burst = slice(120, 132)
    latency[burst] = rng.lognormal(mean=np.log(78.0), sigma=0.15, size=12)
    return np.round(latency, 2)


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    lines = ["latency_ms", *(f"{v:.2f}" for v in make_trace())]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} ({N} latencies)")


if __name__ == "__main__":
    main()
