"""The flow network and its samplers against vectors made by the original benchmark code (jax 0.4.35, flax 0.10.2).

The folder is ``$RTC_SWEEP_CONFORMANCE_DIR`` or the copy shipped in ``tests/data/conformance/small``; its
meta.json gives the model sizes and the cases, cases.npz the inputs and expected outputs (README.md there).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtc_sweep.core.checkpoint import load_policy
from rtc_sweep.core.policy import ModelConfig, Params, velocity
from rtc_sweep.core.samplers import MethodConfig, get_prefix_weights, sample_chunk

CONFORMANCE_DIR = Path(
    os.environ.get("RTC_SWEEP_CONFORMANCE_DIR", Path(__file__).resolve().parent / "data" / "conformance" / "small")
)
# float32 after a few flow steps (conformance README); the port currently agrees to ~2e-6.
ATOL = 1e-4

META: dict[str, Any] = json.loads((CONFORMANCE_DIR / "meta.json").read_text())
with np.load(CONFORMANCE_DIR / "cases.npz") as _npz:
    CASES: dict[str, np.ndarray] = dict(_npz)
MODEL = ModelConfig(**META["model"])


def _by_name(group: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in META[group]}


@functools.cache
def _policy(name: str = "policy.pkl") -> Params:
    return load_policy(CONFORMANCE_DIR / name, MODEL, META["obs_dim"], META["action_dim"])


# Static: the method and the step count; traced: delay and horizon, as in a sweep.
_sample = jax.jit(sample_chunk, static_argnames=("method", "model", "num_flow_steps"))


def _run(method: MethodConfig, case: dict[str, Any], weak: Params | None = None) -> np.ndarray:
    return np.asarray(
        _sample(
            method=method,
            params=_policy(),
            model=MODEL,
            obs=CASES["obs"],
            noise=CASES[f"{case['name']}_noise"],
            prev_chunk=CASES["prev_chunk"],
            inference_delay=jnp.int32(case.get("inference_delay", 0)),
            prefix_attention_horizon=jnp.int32(case.get("prefix_attention_horizon", 0)),
            num_flow_steps=case["num_steps"],
            weak_params=weak,
        )
    )


def test_sizes_match_meta() -> None:
    assert CASES["x_t"].shape == (META["batch"], MODEL.action_chunk_size, META["action_dim"])
    assert CASES["obs"].shape == (META["batch"], META["obs_dim"])


@pytest.mark.parametrize("i", range(len(CASES["velocity_times"])), ids=lambda i: f"velocity_t{i}")
def test_velocity(i: int) -> None:
    t = CASES["velocity_times"][i]
    B = CASES["x_t"].shape[0]
    v = velocity(_policy(), MODEL, jnp.asarray(CASES["obs"]), jnp.asarray(CASES["x_t"]), jnp.full((B,), t))
    np.testing.assert_allclose(v, CASES[f"velocity_t{i}"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", _by_name("naive"))
def test_naive(name: str) -> None:
    case = _by_name("naive")[name]
    np.testing.assert_allclose(_run(MethodConfig("naive"), case), CASES[f"{name}_out"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", _by_name("realtime"))
def test_realtime(name: str) -> None:
    case = _by_name("realtime")[name]
    method = MethodConfig(
        "realtime", prefix_attention_schedule=case["schedule"], max_guidance_weight=case["max_guidance_weight"]
    )
    np.testing.assert_allclose(_run(method, case), CASES[f"{name}_out"], atol=ATOL, rtol=0)


def test_hard_masking_is_realtime_with_zeros() -> None:
    # realtime_3 is the original's hard masking: its "zeros" schedule; our method ignores the configured one.
    case = _by_name("realtime")["realtime_3"]
    assert case["schedule"] == "zeros"
    method = MethodConfig(
        "hard_masking", prefix_attention_schedule="exp", max_guidance_weight=case["max_guidance_weight"]
    )
    np.testing.assert_allclose(_run(method, case), CASES["realtime_3_out"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", _by_name("bid"))
def test_bid(name: str) -> None:
    case = _by_name("bid")[name]
    weak = None if case["weak_policy"] is None else _policy(case["weak_policy"])
    method = MethodConfig("bid", n_samples=case["n_samples"], bid_k=case["bid_k"], weak_checkpoint=case["weak_policy"])
    method.validate()
    np.testing.assert_allclose(_run(method, case, weak), CASES[f"{name}_out"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", _by_name("prefix_weights"))
def test_prefix_weights(name: str) -> None:
    case = _by_name("prefix_weights")[name]
    w = jax.jit(get_prefix_weights, static_argnums=(2, 3))(
        jnp.int32(case["start"]), jnp.int32(case["end"]), case["total"], case["schedule"]
    )
    np.testing.assert_allclose(w, CASES[name], atol=1e-6, rtol=0)
