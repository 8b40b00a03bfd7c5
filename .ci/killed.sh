#!/usr/bin/env bash
# Killed producers (joblib with loky from PyPI, Pool.terminate, SIGKILL) and rank 0's close under
# torchrun: the suites that need joblib installed. About 2-3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
timeout 300 python -m pip install -q joblib -c .ci/constraints.txt
timeout 900 python -m pytest -q -p no:cacheprovider tests/test_killed_producers.py tests/test_rank0_close.py
