"""rtc_sweep: random, long-tailed inference delays for action-chunking flow policies on Kinetix."""

import os as _os

# jaxlib 0.9 logs two C++ "machine feature" errors for every program it loads from the persistent compilation
# cache (pseudo-features such as +prefer-no-scatter that it wrote itself); they are harmless and flood the logs.
# The variable is read once, when jaxlib loads, and a user's own setting wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
