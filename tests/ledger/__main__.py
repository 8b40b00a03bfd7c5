"""``python tests/ledger --seed N``: run one ledger seed in this (fresh) process and judge it."""

import os
import sys

if __name__ == "__main__":
    # Run as a folder, so that the repro command works from a checkout: tests/ is the import root.
    # (in place of this folder itself, whose modules are only ever imported as ledger.*).
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from ledger.runner import main

    sys.exit(main())
