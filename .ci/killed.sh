#!/usr/bin/env bash
# The killed-producer test that needs joblib/loky from the registry (loky's abort SIGKILLs the
# other workers). The rest of tests/mechanism/test_killed_producers.py and tests/test_rank0_close.py
# run in the README's test command already. About a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
timeout 300 python -m pip install -q joblib -c .ci/constraints.txt
timeout 600 python -m pytest -q -p no:cacheprovider tests/mechanism/test_killed_producers.py -k joblib
