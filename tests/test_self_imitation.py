"""task=self_imitation on the real env (tiny shapes): the elite, the iterations, resuming."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rtc_sweep.core.checkpoint import load_policy
from rtc_sweep.core.policy import MODEL_PRESETS
from rtc_sweep.errors import ConfigError
from rtc_sweep.train import config as train_config
from rtc_sweep.train.flow_bc import OptimConfig
from rtc_sweep.train.rollout import shortest_episodes
from rtc_sweep.train.self_imitation import SelfImitationConfig, run_self_imitation

CONF = Path(__file__).resolve().parents[1] / "rtc_sweep" / "train" / "conf"
SMALL = MODEL_PRESETS["small"]
POLICY = "worlds_l_grasp_easy.pkl"


def test_the_elite_is_the_shortest_whole_episodes():
    done = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 1], bool)  # episodes of lengths 3, 1, 4, 2
    data = {"done": done, "action": np.arange(10.0)}
    half = shortest_episodes(data, 0.5)
    np.testing.assert_array_equal(half["action"], [3, 8, 9])  # lengths 1 and 2, in their order
    np.testing.assert_array_equal(half["done"], [True, False, True])
    assert shortest_episodes(data, 0.01)["action"].tolist() == [3.0]  # at least one episode
    assert shortest_episodes(data, 1.0) is data
    with pytest.raises(ValueError, match="fraction"):
        shortest_episodes(data, 0.0)


def test_elite_fraction_out_of_range_names_the_key():
    train_config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["task=self_imitation", "model=small", "task.elite_fraction=1.5"])
    with pytest.raises(ConfigError, match=r"task\.elite_fraction"):
        train_config.to_runtime(cfg, "small")


def test_self_imitation_writes_iterations_and_resumes(tmp_path):
    cfg = SelfImitationConfig(
        run_dir=str(tmp_path / "si"),
        model=SMALL,
        optim=OptimConfig(batch_size=8, warmup_steps=1),
        num_iterations=1,
        init_candidates=2,
        collect_envs=8,
        eval_envs=4,
        num_ticks=48,
        grad_steps=3,
        elite_fraction=0.5,
    )
    best = run_self_imitation(cfg, progress=False)
    run = tmp_path / "si"
    assert (run / "0" / "policies" / POLICY).is_file()
    stats = json.loads((run / "1" / "stats.json").read_text())
    assert 0.0 <= stats["eval"]["returned_episode_solved"] <= 1.0
    assert all(np.isfinite(v) for v in stats["fit"].values())
    with np.load(run / "1" / "data" / "worlds_l_grasp_easy.npz") as data:
        assert set(data.files) == {"obs", "action", "done", "solved", "return_", "length"}
        assert data["obs"].dtype == np.float16
        if data["done"].size:  # only solved episodes are kept, each ending on its done row
            assert data["done"][-1] and data["solved"][data["done"]].all()
    assert json.loads((run / "best.json").read_text()) == best
    run_self_imitation(dataclasses.replace(cfg, num_iterations=2), progress=False)
    assert (run / "2" / "stats.json").is_file()
    load_policy(run / "2" / "policies" / POLICY, SMALL)
