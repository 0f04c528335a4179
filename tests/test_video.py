"""The rollout video: one frame per tick, written without forking a process that runs JAX's threads."""

import dataclasses
import os
import subprocess
import sys
import warnings
from pathlib import Path

import imageio.v2 as imageio
import jax.numpy as jnp
import numpy as np
import pytest

from rtc_sweep.core.delays import PRESETS
from rtc_sweep.core.policy import MODEL_PRESETS
from rtc_sweep.core.run_config import RunConfig
from rtc_sweep.io import VIDEO_FILE, write_mp4
from rtc_sweep.sweep.evaluate import render_video

# The calls of this process's fork handlers (os.register_at_fork); JAX's, one of them, warns "os.fork() was called".
_FORK_HANDLER_CALLS: list[int] = []
os.register_at_fork(before=lambda: _FORK_HANDLER_CALLS.append(os.getpid()))


def _frames(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    # imageio's reader starts ffmpeg with preexec_fn=os.setpgrp (which runs the fork handlers) unless told not to.
    monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    return list(iter(imageio.get_reader(path)))  # iterated: the reader's length of a stream is inf


def test_write_mp4_runs_no_fork_handler_after_jax_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jnp.zeros(1).block_until_ready()  # JAX's backend is up: its threads, and its fork handler
    frames = np.random.default_rng(0).integers(0, 256, (5, 24, 33, 3), dtype=np.uint8)  # an odd width: padded
    calls = len(_FORK_HANDLER_CALLS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_mp4(tmp_path / VIDEO_FILE, frames, fps=15)
    assert len(_FORK_HANDLER_CALLS) == calls
    assert not [w for w in caught if "fork" in str(w.message)]
    assert list(tmp_path.iterdir()) == [tmp_path / VIDEO_FILE]
    decoded = _frames(tmp_path / VIDEO_FILE, monkeypatch)
    assert len(decoded) == 5
    assert decoded[0].shape == (24, 34, 3)


def test_write_mp4_refuses_bad_frames_and_leaves_no_file_when_ffmpeg_fails(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RGB"):
        write_mp4(tmp_path / VIDEO_FILE, np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(RuntimeError, match="ffmpeg could not write"):
        write_mp4(tmp_path / VIDEO_FILE, np.zeros((2, 8, 8, 3), np.uint8), fps=0)  # ffmpeg refuses a rate of 0
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_render_video_writes_one_frame_per_tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RunConfig(checkpoint="random", model=MODEL_PRESETS["small"], delay=PRESETS["long_tail"], max_timesteps=12)
    path = render_video(dataclasses.replace(cfg, num_evals=1), tmp_path / VIDEO_FILE)
    frames = _frames(path, monkeypatch)
    assert len(frames) == 12
    assert frames[0].shape[-1] == 3
    assert frames[0].std() > 0  # something was drawn
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


@pytest.mark.slow
def test_a_video_run_prints_no_fork_warning(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rtc_sweep", "+experiment=smoke", "video=true", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / VIDEO_FILE).stat().st_size > 0
    assert "fork" not in out.stderr, out.stderr[-3000:]
