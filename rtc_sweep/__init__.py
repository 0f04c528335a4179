"""rtc_sweep: random, long-tailed inference delays for action-chunking flow policies on Kinetix."""

__version__ = "0.1.0"
