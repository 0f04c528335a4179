"""``python -m rtc_sweep.aggregate <sweep dir> [--detect D]``: the entry point of ``rtc_sweep.report.aggregate``."""

import sys

from rtc_sweep.report.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
