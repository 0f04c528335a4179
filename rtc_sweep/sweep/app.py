"""What one ``python -m rtc_sweep`` job does around ``evaluate``: validate, skip or resume, write its outputs."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rtc_sweep.io import VIDEO_FILE, atomic_write_text, write_csv
from rtc_sweep.report.results import (
    CONFIG_HASH_COLUMN,
    IDENTIFYING_COLUMNS,
    METRIC_COLUMNS,
    PARTIAL_DIR,
    RESULTS_FILE,
    SKIPPED_FILE,
    complete_results,
)
from rtc_sweep.runtime import configure_host_devices, enable_compilation_cache
from rtc_sweep.sweep.config import JobConfig, config_columns, config_hash, in_reference_grid, validate

log = logging.getLogger("rtc_sweep")


def describe(job: JobConfig) -> str:
    run = job.run
    s: int | str = run.execute.execute_horizon
    if run.execute.mode == "adaptive":
        s = f"adaptive(s_min={run.execute.s_min})"
    elif run.execute.mode == "synchronous":
        s = f"synchronous({s})"
    return (
        f"level={run.level} profile={run.delay.name} method={run.method.name} s={s} seed={run.seed} "
        f"num_evals={run.num_evals}"
    )


def results_row(row: dict[str, Any], job: JobConfig, digest: str) -> tuple[dict[str, Any], list[str]]:
    """evaluate's row completed with the job's config; columns: identifying, metrics, evaluate's extras, config."""
    missing = [c for c in (*IDENTIFYING_COLUMNS, *METRIC_COLUMNS) if c not in row]
    if missing:
        raise RuntimeError(f"evaluate() returned a row without {missing}")
    out = dict(row)
    out.setdefault("delay_scope", job.run.delay.scope)
    for key, value in config_columns(job.run).items():
        out.setdefault(key, value)
    out[CONFIG_HASH_COLUMN] = digest
    head = [*IDENTIFYING_COLUMNS, *METRIC_COLUMNS]
    return out, head + [c for c in out if c not in head]


def skip_before_validation(job: JobConfig) -> str | None:
    """Why ``run`` skips the job before validating it (a sweep's incompatible pairs), or None.

    The sweep's precheck (precheck.py) asks the same question, so that it does not report these jobs as invalid.
    """
    if job.compatible_only and job.run.method.name == "training_time" and not job.run.model.simulated_delay:
        # A sweep crossing models with methods: training_time needs a policy fine-tuned with simulated delay.
        return "skipped: method training_time needs model.simulated_delay (a training-time RTC policy); no row"
    if job.synchronous_naive_only and job.run.execute.mode == "synchronous" and job.run.method.name != "naive":
        # A sweep crossing execute policies with methods: the synchronous baseline runs the naive sampler.
        method = job.run.method.name
        return f"skipped: execute_policy=synchronous runs only with method naive here (got {method}); no row"
    return None


def run(job: JobConfig, job_dir: Path) -> float | None:
    """Run one job into ``job_dir``; returns its headline number (returned_episode_solved), None when skipped.

    Raises ``ConfigError`` before anything is compiled when a value is invalid. Everything after ``validate`` uses
    the job it returns: the files it found, the trace it read (nothing checks or reads them again).
    """
    configure_host_devices()
    what = describe(job)
    if (reason := skip_before_validation(job)) is not None:
        log.info("%s: %s", what, reason)
        job_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(job_dir / SKIPPED_FILE, reason + "\n")
        return None
    job = validate(job)  # the boundary: every value checked once, the policy files found, a trace file read
    job_dir.mkdir(parents=True, exist_ok=True)

    if job.reference_grid_only and not in_reference_grid(job.run):
        d, s, H = job.run.delay.fixed_delay, job.run.execute.execute_horizon, job.run.model.action_chunk_size
        reason = f"skipped: (d={d}, s={s}) is outside the reference grid d <= s <= H - d (H={H}); no results row"
        log.info("%s: %s", what, reason)
        atomic_write_text(job_dir / SKIPPED_FILE, reason + "\n")
        return None

    results_path = job_dir / RESULTS_FILE
    digest = config_hash(job.run)
    if job.resume and (done := complete_results(results_path, digest)):
        solved = float(done[0]["returned_episode_solved"])
        log.info("%s: already complete in %s (returned_episode_solved=%.4f); skipped", what, results_path, solved)
        if job.video and not (job_dir / VIDEO_FILE).is_file():
            _render(job, job_dir, what)
        return solved

    enable_compilation_cache()
    from rtc_sweep.sweep.evaluate import evaluate, job_folder

    log.info("%s: evaluating (the first run on a machine compiles, later ones use the cache)", what)
    partial = job_dir / PARTIAL_DIR
    if not job.resume and partial.exists():  # resume=false: every environment runs again
        shutil.rmtree(partial)
    start = time.perf_counter()
    # the job folder keeps what a rerun resumes from: a measured job's timings, the finished micro-batches
    with job_folder(job_dir):
        row = evaluate(job.run, progress=job.progress and sys.stderr.isatty())
    seconds = time.perf_counter() - start
    out, columns = results_row(row, job, digest)
    write_csv(results_path, [out], columns)
    shutil.rmtree(partial, ignore_errors=True)  # after the row is on disk: a kill in between loses nothing
    solved = float(out["returned_episode_solved"])
    log.info(
        "%s: returned_episode_solved=%.4f d_p99=%s p_violate=%s max_ddelta_action=%s (%.1f s) -> %s",
        what, solved, out["d_p99"], out["p_violate"], out["max_ddelta_action"], seconds, results_path,
    )  # fmt: skip

    if job.video:
        _render(job, job_dir, what)
    return solved


def _render(job: JobConfig, job_dir: Path, what: str) -> None:
    from rtc_sweep.sweep.evaluate import render_video

    enable_compilation_cache()
    log.info("%s: rendering environment 0 to %s", what, VIDEO_FILE)
    render_video(job.run, job_dir / VIDEO_FILE)


# Hydra's own bash completion recognises `python script.py` and installed commands, not `python -m pkg`: this one
# hands `python -m rtc_sweep ...` lines to Hydra's completion query as if the app were a command.
BASH_COMPLETION = r"""_rtc_sweep_completion()
{
    local words=($COMP_LINE)
    if [[ "${words[1]}" != "-m" || "${words[2]}" != "rtc_sweep" ]]; then
        return
    fi
    local line="rtc_sweep ${COMP_LINE#*rtc_sweep}"
    local choices=$(COMP_LINE="$line" COMP_POINT=${#line} "${words[0]}" -m rtc_sweep -sc query=bash 2>/dev/null)
    COMPREPLY=($(compgen -o nospace -o default -W "$choices" -- "${words[$COMP_CWORD]}"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _rtc_sweep_completion python python3
"""


def completion_install_requested(argv: list[str]) -> bool:
    """``-sc install=bash`` (or ``--shell-completion``) while running as ``python -m rtc_sweep``."""
    for flag in ("-sc", "--shell-completion"):
        if flag in argv and argv.index(flag) + 1 < len(argv) and argv[argv.index(flag) + 1] == "install=bash":
            return os.path.basename(argv[0]) == "__main__.py"
    return False
