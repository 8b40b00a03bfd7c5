"""A process whose very first logging call comes from an atexit hook (it never logged before)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hyrax_tbhub.testing import read_logs

pytestmark = pytest.mark.timeout(120)

SCRIPT = textwrap.dedent(
    """
    import atexit, multiprocessing as mp, sys

    def child():
        from hyrax_tbhub import get_tensorboard_logger
        atexit.register(lambda: get_tensorboard_logger().add_scalar("first_at_exit", 1.0, 0))

    if __name__ == "__main__":
        from hyrax_tbhub import close_tensorboard_logger, init_tensorboard_logger
        init_tensorboard_logger(log_dir=sys.argv[1])
        p = mp.get_context("spawn").Process(target=child)
        p.start()
        p.join(60)
        close_tensorboard_logger()
        sys.exit(p.exitcode)
    """
)


def test_a_first_call_from_an_atexit_hook_lands_or_is_said_never_raised(tmp_path: Path) -> None:
    """Interpreter shutdown has begun when the hook runs: the call must not raise (Python 3.12+
    refuses new threads then) and its event must be on disk or said on stderr."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    logdir = tmp_path / "log"
    proc = subprocess.run([sys.executable, str(script), str(logdir)], capture_output=True, text=True,
                          timeout=100, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    landed = read_logs(logdir).scalars("first_at_exit")
    if sys.version_info < (3, 12):
        assert landed == [(0, 1.0)], proc.stderr
    else:  # no thread can start at shutdown: the loss is said
        assert landed == [(0, 1.0)] or "could not be saved" in proc.stderr, proc.stderr
