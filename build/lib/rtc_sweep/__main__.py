"""``python -m rtc_sweep``: compose the config, convert it once into frozen dataclasses, run one job (app.run)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rtc_sweep.errors import ConfigError
from rtc_sweep.runtime import configure_host_devices
from rtc_sweep.sweep.config import command_line, register_configs, to_job_config

log = logging.getLogger("rtc_sweep")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from rtc_sweep.sweep.app import run

    try:
        return run(to_job_config(cfg), Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as e:
        log.error("invalid config: %s", e)
        raise SystemExit(2) from e


def cli() -> None:
    configure_host_devices()  # before anything imports JAX
    from rtc_sweep.sweep.app import BASH_COMPLETION, completion_install_requested
    from rtc_sweep.sweep.launch import register_launcher

    if completion_install_requested(sys.argv):
        print(BASH_COMPLETION)
        return
    register_configs()
    register_launcher()
    try:
        sys.argv[1:] = command_line(sys.argv[1:])
    except ConfigError as e:
        sys.exit(f"invalid override: {e}")
    main()


if __name__ == "__main__":
    cli()
