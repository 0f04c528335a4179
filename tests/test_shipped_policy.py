"""The shipped grasp_easy policy still solves its level (the model card's claim, on fewer episodes)."""

import dataclasses

import pytest

from rtc_sweep.core.delays import PRESETS
from rtc_sweep.core.policy import MODEL_PRESETS
from rtc_sweep.core.run_config import ExecutePolicy, RunConfig
from rtc_sweep.core.samplers import MethodConfig
from rtc_sweep.sweep.evaluate import evaluate


@pytest.mark.slow
def test_shipped_grasp_easy_policy_solves_with_naive_chunking_at_zero_delay():
    cfg = RunConfig(
        level="grasp_easy",
        model=MODEL_PRESETS["small"],
        delay=dataclasses.replace(PRESETS["fixed"], fixed_delay=0),
        method=MethodConfig(name="naive"),
        execute=ExecutePolicy(mode="fixed", execute_horizon=1),
        num_evals=256,
        seed=1,
    )
    row = evaluate(cfg, progress=False)
    assert row["returned_episode_solved"] >= 0.9  # MODEL_CARD.md: 0.988 of 2048 (seed 0)
