"""The shipped policies still solve their levels (the model card's claims, on fewer episodes)."""

import dataclasses

import pytest

from rtc_sweep.core.delays import PRESETS
from rtc_sweep.core.policy import MODEL_PRESETS
from rtc_sweep.core.run_config import ExecutePolicy, RunConfig
from rtc_sweep.core.samplers import MethodConfig
from rtc_sweep.sweep.evaluate import evaluate, shipped_checkpoints


def test_the_shipped_policies_are_in_the_package():
    shipped = {"grasp_easy/small", "cartpole_thrust/small", "catapult/default", "h17_unicycle/default",
               "mjc_half_cheetah/default", "hard_lunar_lander/small"}  # fmt: skip
    assert shipped <= set(shipped_checkpoints())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("level", "model", "at_least"),
    [
        ("grasp_easy", "small", 0.9),  # MODEL_CARD.md: 0.988 of 2048 (seed 0)
        ("cartpole_thrust", "small", 0.85),  # MODEL_CARD.md: 0.948 of 2048 (seed 0)
        ("catapult", "default", 0.7),  # MODEL_CARD.md: 0.809 of 2048 (seed 0)
        ("h17_unicycle", "default", 0.8),  # MODEL_CARD.md: 0.921 of 2048 (seed 0)
        ("mjc_half_cheetah", "default", 0.7),  # MODEL_CARD.md: 0.810 of 2048 (seed 0)
        ("hard_lunar_lander", "small", 0.7),  # MODEL_CARD.md: 0.804 of 2048 (seed 0)
    ],
)
def test_shipped_policy_solves_with_naive_chunking_at_zero_delay(level, model, at_least):
    cfg = RunConfig(
        level=level,
        model=MODEL_PRESETS[model],
        delay=dataclasses.replace(PRESETS["fixed"], fixed_delay=0),
        method=MethodConfig(name="naive"),
        execute=ExecutePolicy(mode="fixed", execute_horizon=1),
        num_evals=256,
        seed=1,
    )
    row = evaluate(cfg, progress=False)
    assert row["returned_episode_solved"] >= at_least
