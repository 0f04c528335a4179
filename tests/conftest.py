import os

# Tests run on CPU by default, with two host devices so multi-device code is exercised.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

from rtc_sweep.runtime import enable_compilation_cache

enable_compilation_cache()


import gc  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop JAX's in-process caches of compiled programs (and their mapped code).

    One pytest process compiles several hundred Kinetix programs; without this, the full suite's process died
    with a segmentation fault inside XLA:CPU (compiling, loading or serialising an executable) at the same test
    every time, about 490 tests in (3 of 3 full runs in session 4; never when the module ran alone). Programs a
    later module needs again come back from the persistent cache in milliseconds.
    """
    yield
    jax.clear_caches()
    gc.collect()
