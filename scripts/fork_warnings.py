"""Which forks of the test suite run while other threads exist, and whose threads those are.

    python scripts/fork_warnings.py [--out FILE] [PYTEST ARGS...]   # e.g. tests/test_processes.py

CPython 3.12+ warns ``DeprecationWarning: This process is multi-threaded, use of fork() may lead
to deadlocks in the child`` from ``os.fork()`` whenever the forking process has more than one
thread (it counts the process's OS threads, so threads of C libraries count too). This runs
pytest with a plugin that wraps ``os.fork`` in the pytest process and records, for every fork: the
test, the Python threads alive besides the forking one (ours are named ``hyrax_tbhub-*``), the OS
thread count, and the first frame outside ``multiprocessing``/``multiprocess``/``os`` that asked
for the fork. It also counts the warnings pytest recorded. Nothing is silenced: pytest prints its
warnings summary as usual. docs/fork-safety.md reports the figures and what they mean.

Only forks made by the pytest process are seen; a test's own subprocesses report their warnings
on their own stderr, which the tests capture.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

_WARNING_TEXT = "use of fork() may lead to deadlocks"
_OUT_ENV = "FORK_WARNINGS_OUT"
_PLUMBING = ("/multiprocessing/", "/multiprocess/", "/concurrent/futures/", "fork_warnings.py", "/os.py")

_current = {"nodeid": "(collection)"}
_forks: list[dict[str, Any]] = []
_warnings: collections.Counter[str] = collections.Counter()


def _os_threads() -> int | None:
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[17])  # field 20: num_threads
    except (OSError, ValueError, IndexError):
        return None


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not any(part in frame.filename for part in _PLUMBING):
            return f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
    return "?"


def _install() -> None:
    real_fork = os.fork

    def fork() -> int:
        me = threading.current_thread()
        others = [t.name for t in threading.enumerate() if t is not me]
        os_threads = _os_threads()
        if others or (os_threads or 1) > 1:
            _forks.append({"nodeid": _current["nodeid"], "threads": others, "os_threads": os_threads,
                           "caller": _caller(), "in_main_thread": me is threading.main_thread()})
        pid = real_fork()
        if pid == 0:  # the child keeps nothing of this: it is not the pytest process
            _forks.clear()
        return pid

    os.fork = fork


# --------------------------------------------------------------------------- pytest plugin hooks


def pytest_configure(config: Any) -> None:
    _current["pid"] = str(os.getpid())
    _install()


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _current["nodeid"] = nodeid


def pytest_warning_recorded(warning_message: Any, when: str, nodeid: str, location: Any) -> None:
    if _WARNING_TEXT in str(warning_message.message):
        _warnings[nodeid.split("::")[0] or _current["nodeid"].split("::")[0]] += 1


def _save() -> None:
    out = os.environ.get(_OUT_ENV)
    if out and str(os.getpid()) == _current["pid"]:  # the pytest process, not a child of it
        Path(out).write_text(json.dumps({"forks": _forks, "warnings": dict(_warnings)}))


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    _save()  # after every test, so that an interrupted run still has its figures


def pytest_unconfigure(config: Any) -> None:
    _save()


# --------------------------------------------------------------------------- command line


def _ours(name: str) -> bool:
    return name.startswith("hyrax_tbhub-")


def _summary(data: dict[str, Any]) -> str:
    per_file: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    callers: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    thread_names: collections.Counter[str] = collections.Counter()
    for fork in data["forks"]:
        path = fork["nodeid"].split("::")[0]
        ours = [t for t in fork["threads"] if _ours(t)]
        theirs = [t for t in fork["threads"] if not _ours(t)]
        kind = "ours only" if ours and not theirs else "ours + others" if ours else (
            "others only" if theirs else "C threads only")
        per_file[path]["forks"] += 1
        per_file[path][kind] += 1
        callers[path][fork["caller"]] += 1
        for name in set(fork["threads"]):
            thread_names[name.split("(")[0].rstrip("-0123456789") or name] += 1
    kinds = ["ours only", "ours + others", "others only", "C threads only"]
    lines = [
        "| test file | forks with other threads | " + " | ".join(kinds) + " | warnings recorded |",
        "|---|---:|" + "---:|" * len(kinds) + "---:|",
    ]
    files = sorted(set(per_file) | set(data["warnings"]), key=lambda f: -per_file[f]["forks"])
    for path in files:
        counts = per_file[path]
        lines.append(f"| {path} | {counts['forks']} | " + " | ".join(str(counts[k]) for k in kinds)
                     + f" | {data['warnings'].get(path, 0)} |")
    total = sum(c["forks"] for c in per_file.values())
    lines.append(f"| **total** | {total} | " + " | ".join(
        str(sum(c[k] for c in per_file.values())) for k in kinds) + f" | {sum(data['warnings'].values())} |")
    lines += ["", "threads alive at those forks (forks seen with each):"]
    lines += [f"  {n:6d}  {name}" for name, n in thread_names.most_common()]
    lines += ["", "who asked for the fork (first frame outside multiprocessing/os), per file:"]
    for path in files:
        for caller, n in callers[path].most_common(3):
            lines.append(f"  {path}: {n} x {caller}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    keep = None
    if argv[:1] == ["--out"]:  # keep the raw figures (they are written after every test)
        keep, argv = Path(argv[1]), argv[2:]
    if argv[:1] == ["--summary"]:  # only summarise figures kept by an earlier run
        sys.stdout.write(_summary(json.loads(Path(argv[1]).read_text())))
        return 0
    with tempfile.TemporaryDirectory(prefix="fork_warnings-") as tmp:
        out = keep or Path(tmp, "forks.json")
        env = dict(os.environ)
        env[_OUT_ENV] = str(out)
        # scripts/ goes last on the path of the pytest process only, so that it shadows nothing.
        here = str(Path(__file__).resolve().parent)
        code = (f"import sys; sys.path.append({here!r}); import pytest; "
                f"sys.exit(pytest.main(['-p', 'fork_warnings', *sys.argv[1:]]))")
        rc = subprocess.run([sys.executable, "-c", code, *argv], env=env).returncode
        if not out.exists():
            print("fork_warnings: pytest wrote no figures", file=sys.stderr)
            return rc or 1
        sys.stdout.write(_summary(json.loads(out.read_text())))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
