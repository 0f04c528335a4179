"""Job outputs on disk: atomic writes, CSV files (columns, completeness: ``rtc_sweep.report.results``), the video.

Every file is written to a temporary file in the same folder and moved into place with ``os.replace``, so a
job killed mid-write leaves either the old file or none, never half a table that a resumed sweep would trust.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

VIDEO_FILE = "rollout.mp4"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path next to ``path`` (same suffix); on success it replaces ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); results are meant to be shared like any file the user writes.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV (missing values and None as empty cells, floats in full precision), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    atomic_write_text(path, buf.getvalue())


def write_mp4(path: str | os.PathLike[str], frames: np.ndarray, fps: int = 15) -> None:
    """``frames`` [T, h, w, 3] uint8 (RGB) as an H.264 mp4 (yuv420p; an odd side padded by a pixel), atomically.

    ffmpeg (imageio-ffmpeg's binary) runs as a plain child reading the raw frames on stdin. Not through imageio's
    writer: that starts ffmpeg with ``preexec_fn=os.setpgrp``, and a ``preexec_fn`` makes CPython run Python code
    in the forked child and the process's fork handlers first; in a process where JAX has started its threads,
    that is the deadlock JAX's fork handler warns about on stderr. Without one, ``subprocess`` forks and execs in
    C (no Python in the child, no fork handlers).
    """
    import subprocess

    import imageio_ffmpeg
    import numpy as np

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or not frames.shape[0]:
        raise ValueError(f"frames must be [T >= 1, h, w, 3] RGB, got shape {frames.shape}")
    _, h, w, _ = frames.shape
    with atomic_path(path) as tmp:
        # The options imageio's writer used (libx264, yuv420p, its default quality 5 = crf 25).
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-an",
            "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "25", str(tmp),
        ]  # fmt: skip
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"ffmpeg could not write {path} (exit {proc.returncode}): {err}")


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]] | None:
    """The rows of a CSV file as strings, or None when it is missing or unreadable."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
