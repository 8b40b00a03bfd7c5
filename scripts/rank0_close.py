"""How often is the log complete when rank 0's close returns? torchrun jobs, repeated.

Each repetition runs tests/rank0_close_job.py under ``python -m torch.distributed.run`` (gloo, CPU,
one node): every rank and its DataLoader workers log, a barrier, rank 0 closes and counts what the
log folder holds while the other ranks wait. Prints one line per repetition and the total, e.g.::

    python scripts/rank0_close.py --nproc 2 --reps 20 --mode auto
    python scripts/rank0_close.py --nproc 4 --reps 20 --mode off --persistent
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

JOB = Path(__file__).resolve().parent.parent / "tests" / "rank0_close_job.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_once(workdir: Path, nproc: int, mode: str, items: int, epochs: int, persistent: bool,
             timeout: float) -> dict[str, object]:
    """One torchrun job; its report plus ``complete`` and ``missing`` ({rank: events})."""
    logdir, report = workdir / "log", workdir / "report.json"
    runtime = workdir / "rt"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "HYRAX_TBHUB_RUNTIME_DIR": str(runtime), "GLOO_SOCKET_IFNAME": "lo",
           "OMP_NUM_THREADS": "1"}
    env.pop("HYRAX_TBHUB_INFO", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--max-restarts", "0",
           str(JOB), "--logdir", str(logdir), "--report", str(report), "--items", str(items),
           "--epochs", str(epochs), "--rank-hubs", mode] + (["--persistent"] if persistent else [])
    out = workdir / "job.log"
    with open(out, "wb") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"the job failed ({proc.returncode}):\n{out.read_text()[-4000:]}")
    result: dict[str, object] = json.loads(report.read_text())
    expected: dict[str, int] = result["expected"]  # type: ignore[assignment]
    found: dict[str, dict[str, int]] = result["found"]  # type: ignore[assignment]
    missing = {r: sum(expected.values()) - sum(tags.values()) for r, tags in found.items()}
    result["missing"] = {r: n for r, n in missing.items() if n}
    result["complete"] = not result["missing"]
    result["stderr"] = [line for line in out.read_text().splitlines() if "hyrax_tbhub" in line]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--mode", choices=["auto", "off"], default="auto",
                   help="auto: a hub per rank (shared log folder); off: every rank over TCP to rank 0")
    p.add_argument("--items", type=int, default=40)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--persistent", action="store_true", help="persistent DataLoader workers")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per job")
    args = p.parse_args(argv)
    complete = 0
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory(prefix="rank0close") as tmp:
            r = run_once(Path(tmp), args.nproc, args.mode, args.items, args.epochs, args.persistent,
                         args.timeout)
        complete += bool(r["complete"])
        print(f"rep {rep + 1}: {'complete' if r['complete'] else 'INCOMPLETE'} close {r['close_s']:.3f} s"
              f" missing {r['missing']} {r['stderr'] if not r['complete'] else ''}", flush=True)
    print(f"{complete} of {args.reps} complete (nproc {args.nproc}, mode {args.mode}, "
          f"persistent workers {args.persistent})")
    return 0 if complete == args.reps else 1


if __name__ == "__main__":
    sys.exit(main())
