"""``python -m rtc_sweep.train task=<task> level=<name> model=<option>``: compose the config (rtc_sweep/train/conf/
and the shared level and model groups), convert and check it once (``config.to_runtime``), run the task."""

from __future__ import annotations

from rtc_sweep.runtime import configure_host_devices

configure_host_devices()  # before JAX starts: the env batch is sharded over one host device per core

import logging  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from rtc_sweep.errors import ConfigError  # noqa: E402
from rtc_sweep.train import config as train_config  # noqa: E402

train_config.register()
log = logging.getLogger("rtc_sweep.train")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from rtc_sweep.runtime import enable_compilation_cache

    try:
        runtime = train_config.to_runtime(cfg, HydraConfig.get().runtime.choices["model"])
    except ConfigError as e:
        log.error("invalid config: %s", e)
        raise SystemExit(2) from e
    enable_compilation_cache()
    return train_config.run(runtime, progress=cfg.progress)


if __name__ == "__main__":
    main()
