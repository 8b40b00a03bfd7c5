#!/usr/bin/env bash
# The engines' tests (docs/engines.md) with the real engines from the registry: joblib/loky,
# dask.distributed, pytorch-ignite, accelerate, transformers and Ray (with Tune), installed into the active
# environment with torch pinned by the constraints file. Run after .ci/run's install (the package
# and its test extras must be installed). Budget: ~10 minutes on 2 cores (Ray's start-up is
# ~15 s: its tests share one ray.init per module).
set -euo pipefail
cd "$(dirname "$0")/.."

timeout 600 python -m pip install --quiet -c .ci/constraints.txt \
    joblib "dask[distributed]" pytorch-ignite accelerate transformers "ray[tune]"
python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" \
    || { echo "torch is not the pinned 2.13.0"; exit 1; }

timeout 900 python -m pytest -q -p no:cacheprovider tests/test_engines_*.py tests/mechanism/test_engines_*.py
