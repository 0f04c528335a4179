"""``python -m rtc_sweep.train task=<plan|self_imitation|ppo|collect|flow|flow_tt> level=... model=...``."""

from __future__ import annotations

from rtc_sweep.runtime import configure_host_devices

configure_host_devices()  # before JAX starts: the env batch is sharded over one host device per core

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from rtc_sweep.train import config as train_config  # noqa: E402

train_config.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from rtc_sweep.runtime import enable_compilation_cache

    enable_compilation_cache()
    runtime = train_config.to_runtime(cfg, HydraConfig.get().runtime.choices["model"])
    return train_config.run(runtime, progress=cfg.progress)


if __name__ == "__main__":
    main()
