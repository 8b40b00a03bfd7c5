"""The switch to hyrax_tbhub for hyrax jobs, in the parts that need no hyrax installed: the
``.pth`` line, ``hyrax-tbhub run`` and ``use_with_hyrax()``'s bookkeeping. What it does to the
real hyrax is in tests/test_hyrax_real.py (run by .ci/hyrax.sh)."""

from __future__ import annotations

import os
import signal
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import hyrax_tbhub
import hyrax_tbhub.tensorboardx_logger as ours

pytestmark = pytest.mark.timeout(60)

ENV = "HYRAX_TBHUB"
TARGET = "hyrax.tensorboardx_logger"
CHILD_TIMEOUT_S = 30


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYRAX_TBHUB")}
    env.pop("PYTHONPATH", None)  # the installed package, as a user has it
    env.update(extra)
    return env


def _python(code: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, env=_env(**extra), cwd="/")


def _site_pth() -> Path | None:
    for folder in site.getsitepackages():
        path = Path(folder) / "hyrax_tbhub.pth"
        if path.exists():
            return path
    return None


needs_pth = pytest.mark.skipif(_site_pth() is None, reason="hyrax_tbhub is not installed in site-packages")

# What of ours (or of hyrax, torch...) a bare interpreter has loaded, and the first finder. An
# editable install adds setuptools' own finder module (``__editable__...``): not ours, left out.
LOADED = ("import sys; print(sorted(m for m in sys.modules if ('hyrax' in m and '__editable__' not in m) "
          "or m in ('torch', 'numpy', 'tensorboardX')), [type(f).__name__ for f in sys.meta_path][0])")


@needs_pth
def test_variable_unset_imports_nothing_of_ours_nor_hyrax_nor_torch() -> None:
    proc = _python(LOADED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[] "), proc.stdout
    assert "HyraxFinder" not in proc.stdout
    assert proc.stderr == ""


@needs_pth
@pytest.mark.parametrize("value", ["", "0"])
def test_variable_empty_or_zero_is_off(value: str) -> None:
    proc = _python(LOADED, HYRAX_TBHUB=value)
    assert proc.stdout.startswith("[]"), proc.stdout


@needs_pth
def test_variable_set_installs_only_the_hook_module_and_its_finder() -> None:
    proc = _python(LOADED, HYRAX_TBHUB="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['_hyrax_tbhub_hook'] HyraxFinder", proc.stdout
    assert proc.stderr == ""


@needs_pth
def test_isolated_mode_still_switches_and_no_site_does_not() -> None:
    """-I ignores PYTHON* variables and the user site, not site-packages' .pth; -S skips them all."""
    isolated = subprocess.run([sys.executable, "-I", "-c", LOADED], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S, env=_env(HYRAX_TBHUB="1"), cwd="/")
    assert "'_hyrax_tbhub_hook'" in isolated.stdout, isolated
    probe = "import sys; print('_hyrax_tbhub_hook' in sys.modules)"
    no_site = subprocess.run([sys.executable, "-S", "-c", probe],
                             capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                             env=_env(HYRAX_TBHUB="1"), cwd="/")
    assert no_site.stdout.strip() == "False"


def _run_cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyrax_tbhub", "run", *args], capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT_S, env=_env(**extra), cwd="/")


def test_run_sets_the_variable_and_passes_the_exit_code_through() -> None:
    code = "import os, sys; print(os.environ['HYRAX_TBHUB']); sys.exit(7)"
    proc = _run_cli("--", sys.executable, "-c", code)
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.strip() == "1"


def test_run_without_separator_and_a_command_killed_by_a_signal() -> None:
    proc = _run_cli(sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert proc.returncode == -signal.SIGTERM


def test_run_is_the_command_itself_so_signals_sent_to_it_reach_the_command() -> None:
    code = ("import signal, sys\n"
            "signal.signal(signal.SIGINT, lambda *a: (print('got SIGINT', flush=True), sys.exit(3)))\n"
            "print('ready', flush=True)\n"
            "signal.pause()\n")
    proc = subprocess.Popen([sys.executable, "-m", "hyrax_tbhub", "run", "--", sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True, env=_env(), cwd="/")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=CHILD_TIMEOUT_S) == 3
        assert proc.stdout.read().strip() == "got SIGINT"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=CHILD_TIMEOUT_S)


def test_run_of_a_missing_command_says_so_and_exits_127() -> None:
    proc = _run_cli("--", "/nonexistent/hyrax-command")
    assert proc.returncode == 127
    assert "cannot run '/nonexistent/hyrax-command'" in proc.stderr


def test_run_with_no_command_is_a_usage_error() -> None:
    proc = _run_cli()
    assert proc.returncode == 2
    assert "usage: hyrax-tbhub run" in proc.stderr


@pytest.fixture
def switched_off() -> Iterator[None]:
    saved_env = os.environ.get(ENV)
    saved_module = sys.modules.get(TARGET)
    hyrax_tbhub.stop_using_with_hyrax()
    yield
    hyrax_tbhub.stop_using_with_hyrax()
    assert os.environ.get(ENV) == saved_env
    assert sys.modules.get(TARGET) is saved_module


def test_use_with_hyrax_is_idempotent_and_undone_by_stop(switched_off: None) -> None:
    """Without hyrax installed the module entry alone is what ``from hyrax.tensorboardx_logger
    import ...`` finds; the variable makes later processes follow."""
    before = list(sys.meta_path)
    hyrax_tbhub.use_with_hyrax()
    hyrax_tbhub.use_with_hyrax()
    assert hyrax_tbhub.hyrax_switched_on()
    assert sys.modules[TARGET] is ours
    assert os.environ[ENV] == "1"
    assert sum(type(f).__name__ == "HyraxFinder" for f in sys.meta_path) == 1
    from hyrax.tensorboardx_logger import get_tensorboard_logger  # type: ignore[import-not-found]

    assert get_tensorboard_logger is ours.get_tensorboard_logger
    hyrax_tbhub.stop_using_with_hyrax()
    hyrax_tbhub.stop_using_with_hyrax()
    assert not hyrax_tbhub.hyrax_switched_on()
    assert sys.meta_path == before


def test_use_with_hyrax_says_once_when_later_processes_cannot_follow() -> None:
    """Under -S no .pth runs: spawned children would import hyrax's own module, and the call says so."""
    paths = [*site.getsitepackages(), str(Path(hyrax_tbhub.__file__).resolve().parent.parent)]
    code = (f"import sys; sys.path[:0] = {paths!r}; import hyrax_tbhub; "
            "hyrax_tbhub.use_with_hyrax(); hyrax_tbhub.stop_using_with_hyrax(); hyrax_tbhub.use_with_hyrax()")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, env=_env(), cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("hyrax_tbhub.pth is not active in this interpreter") == 1, proc.stderr


@needs_pth
def test_undo_in_a_process_switched_at_start_by_the_variable_keeps_it_switched() -> None:
    # The finder is in place from the start; the module entry is what hyrax's import would make.
    code = ("import sys, hyrax_tbhub; "
            "sys.modules['hyrax.tensorboardx_logger'] = hyrax_tbhub.tensorboardx_logger; "
            "hyrax_tbhub.use_with_hyrax(); hyrax_tbhub.stop_using_with_hyrax(); "
            "print(hyrax_tbhub.hyrax_switched_on(), type(sys.meta_path[0]).__name__)")
    proc = _python(code, HYRAX_TBHUB="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "HyraxFinder"]
