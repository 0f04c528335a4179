import os

# Tests run on CPU by default, with two host devices so multi-device code is exercised, and with XLA's backend
# optimisation off: most of the run is compiling Kinetix programs that then run a few ticks on a few environments
# (about 25 % less wall time for tests/test_timeline.py with an empty cache; every test compares programs compiled
# the same way). Subprocesses the tests start inherit both.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0")

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
