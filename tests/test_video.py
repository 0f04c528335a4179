import dataclasses

import imageio.v2 as imageio
import pytest

from rtc_sweep.delays import PRESETS
from rtc_sweep.evaluate import render_video
from rtc_sweep.policy import MODEL_PRESETS
from rtc_sweep.run_config import RunConfig


@pytest.mark.slow
def test_render_video_writes_one_frame_per_tick(tmp_path):
    cfg = RunConfig(checkpoint="random", model=MODEL_PRESETS["small"], delay=PRESETS["long_tail"], max_timesteps=12)
    path = render_video(dataclasses.replace(cfg, num_evals=1), tmp_path / "rollout.mp4")
    frames = list(imageio.get_reader(path))
    assert len(frames) == 12
    assert frames[0].shape[-1] == 3
    assert frames[0].std() > 0  # something was drawn
    assert not list(tmp_path.glob("*.partial.mp4"))
