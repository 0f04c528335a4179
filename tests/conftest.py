import os

# Tests run on CPU by default, with two host devices so multi-device code is exercised.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

from rtc_sweep.runtime import enable_compilation_cache

enable_compilation_cache()
