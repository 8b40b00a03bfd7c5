"""What a call costs in a process that has no hub, next to a plain Python call."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import timeit
import traceback
from multiprocessing.connection import Connection
from typing import Any


def nohub_figures(calls: int, repeats: int) -> dict[str, float]:
    """Cost of a call with no hub next to a plain call, in this process (which must have no hub)."""
    import hyrax_tbhub

    logger = hyrax_tbhub.get_tensorboard_logger()  # the handle is taken once, as in user code

    def plain(a: object, b: object, c: object) -> None:
        return None

    timers = {
        "plain_ns": timeit.Timer("f('x', 1.0, 3)", globals={"f": plain}),
        "nohub_ns": timeit.Timer("log.add_scalar('x', 1.0, 3)", globals={"log": logger}),
        "empty_loop_ns": timeit.Timer("pass"),
    }
    best = {name: math.inf for name in timers}
    for _ in range(repeats):  # interleaved so that a noisy moment hits all of them alike
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(calls) / calls * 1e9)
    return best


def nohub_main(calls: int, repeats: int, conn: Connection) -> None:
    """Body of the spawned no-hub process: a child of multiprocessing may still gain a hub."""
    try:
        conn.send({"ok": nohub_figures(calls, repeats)})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def _clean_env() -> dict[str, str]:
    """Our environment without a hub address, with this copy of the package importable."""
    import hyrax_tbhub

    env = dict(os.environ)
    try:
        from hyrax_tbhub._discovery.hubfile import ENV_INFO
    except ImportError:  # the hub's address moved: nothing to strip then
        pass
    else:
        env.pop(ENV_INFO, None)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(hyrax_tbhub.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def nohub_top_level(calls: int, repeats: int, timeout_s: float) -> dict[str, Any]:
    """The same figures in a top-level interpreter: no multiprocessing parent, no hub to look for."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
        "from hubbench.nohub import nohub_figures\n"
        f"json.dump(nohub_figures({calls}, {repeats}), sys.stdout)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s, env=_clean_env()
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}\n{proc.stderr}"}
    try:
        return {"ok": json.loads(proc.stdout)}
    except ValueError:
        return {"error": f"unreadable answer: {proc.stdout!r}\n{proc.stderr}"}
