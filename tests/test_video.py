import dataclasses

import imageio.v2 as imageio
import pytest

from rtc_sweep.core.delays import PRESETS
from rtc_sweep.core.policy import MODEL_PRESETS
from rtc_sweep.core.run_config import RunConfig
from rtc_sweep.sweep.evaluate import render_video


@pytest.mark.slow
def test_render_video_writes_one_frame_per_tick(tmp_path):
    cfg = RunConfig(checkpoint="random", model=MODEL_PRESETS["small"], delay=PRESETS["long_tail"], max_timesteps=12)
    path = render_video(dataclasses.replace(cfg, num_evals=1), tmp_path / "rollout.mp4")
    frames = list(imageio.get_reader(path))
    assert len(frames) == 12
    assert frames[0].shape[-1] == 3
    assert frames[0].std() > 0  # something was drawn
    assert not list(tmp_path.glob("*.partial.mp4"))
