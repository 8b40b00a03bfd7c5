#!/usr/bin/env bash
# tensorboardX's own test suite, run once with its SummaryWriter and once with
# hyrax_tbhub.SummaryWriter in its place, compared test by test (tests/peer_suite.py). The source
# distribution is downloaded at test time into a cache outside the tree, never committed.
# Run from the activated CI virtualenv (hyrax_tbhub, torch, tensorboard installed); about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

version=2.6.5
cache="${TBX_SUITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyrax_tbhub-peer-suites}"
mkdir -p "$cache"

# Packages of tensorboardX's test-requirements.txt that its tests import and CI lacks:
# soundfile (add_audio, and test_writer's test of every add_*), moto<5 (mock_s3 of
# test_embedding and test_record_writer). torch stays the pinned wheel.
timeout 300 python -m pip install --quiet soundfile "moto<5" -c .ci/constraints.txt

sdist="$cache/tensorboardx-$version.tar.gz"
if [ ! -f "$sdist" ]; then
    timeout 300 python -m pip download --quiet --no-binary :all: --no-deps "tensorboardX==$version" -d "$cache"
fi

timeout 600 python tests/peer_suite.py --sdist "$sdist" \
    --expected "tests/peer_suites/tensorboardX-$version.expected" \
    --replace tensorboardX:SummaryWriter --replace tensorboardX.writer:SummaryWriter
