#!/usr/bin/env bash
# hyrax_tbhub switched on for real hyrax jobs, against each hyrax release from the registry that
# has the tensorboardx_logger module and installs with the pinned torch (0.13, 0.12, 0.11).
#
# One virtualenv per release, outside the tree. The newest gets a full install and runs every
# test of tests/test_hyrax_real.py (stock run, `hyrax train` through `hyrax-tbhub run` and through
# HYRAX_TBHUB=1, a script that switches on after `import hyrax`, a stock writer open at the switch,
# a notebook-style driver running a 2-rank distributed train) plus tests/test_hyrax_switch.py. The
# older releases share the newest one's dependencies (a path line in a .pth file: their own
# site-packages come first, so pip puts there only what differs, hyrax itself included) and run
# the CLI and script tests: their module is the same, what changes between releases is which of
# hyrax's modules import it and how. Each pytest run is bounded by `timeout`.
#
# Usage: bash .ci/hyrax.sh [versions...]  (default: 0.13 0.12 0.11, the first one runs in full)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${HYRAX_CI_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/hyrax-ci.XXXXXX")}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$work/runtime}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(0.13 0.12 0.11)
newest=${versions[0]}
site_of() { "$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }

started=$SECONDS
base=""
for version in "${versions[@]}"; do
    env_dir=$work/hyrax-$version
    echo "== hyrax $version: virtualenv $env_dir"
    if [ ! -x "$env_dir/bin/python" ]; then
        python -m venv "$env_dir"
        if [ -n "$base" ]; then
            site_of "$base" > "$(site_of "$env_dir")/_hyrax_ci_shared_deps.pth"
        fi
    fi
    timeout 1200 "$env_dir/bin/python" -m pip install --quiet "hyrax==$version.*" -e "$root[test]" \
        -c "$root/.ci/constraints.txt"
    "$env_dir/bin/python" -c "import importlib.metadata as m; print('hyrax', m.version('hyrax'), 'torch', m.version('torch'))"
    if [ "$version" = "$newest" ]; then
        base=$env_dir
        timeout 900 "$env_dir/bin/python" -m pytest -q -p no:cacheprovider \
            tests/test_hyrax_switch.py tests/test_hyrax_real.py
    else
        timeout 600 "$env_dir/bin/python" -m pytest -q -p no:cacheprovider tests/test_hyrax_real.py \
            -k "wrapper or after_import"
    fi
    echo "== hyrax $version done at $((SECONDS - started)) s"
done
