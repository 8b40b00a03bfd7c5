"""``hyrax-tbhub run [--] COMMAND [ARG...]``: run a command with hyrax switched to hyrax_tbhub.

It sets ``HYRAX_TBHUB=1`` and replaces itself with the command (``exec``), as
``ddtrace-run`` and ``opentelemetry-instrument`` do: the command keeps this process's pid, so
its exit status and the signals sent to it are its own, with no wrapper in between. Every Python
process of the job inherits the variable; ``hyrax_tbhub.pth`` (installed with the package) then
makes its ``import hyrax.tensorboardx_logger`` give hyrax_tbhub's module.
"""

from __future__ import annotations

import os
import subprocess
import sys

from _hyrax_tbhub_hook import ENV

USAGE = """usage: hyrax-tbhub run [--] COMMAND [ARG...]

Run COMMAND with HYRAX_TBHUB=1 in its environment: every Python process of it (the hyrax CLI,
scripts, spawned ranks and DataLoader workers, subprocesses) logs hyrax's TensorBoard events
through hyrax_tbhub. The exit status is COMMAND's. Example:

  hyrax-tbhub run -- hyrax train -c runtime.toml"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    env = dict(os.environ)
    env[ENV] = "1"
    if os.name != "posix":  # pragma: no cover - no exec that keeps the process on Windows
        try:
            return subprocess.call(args, env=env)
        except OSError as exc:
            print(f"hyrax-tbhub run: cannot run {args[0]!r}: {exc}", file=sys.stderr)
            return 127
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(args[0], args, env)
    except OSError as exc:
        print(f"hyrax-tbhub run: cannot run {args[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 126 if isinstance(exc, PermissionError) else 127
    raise AssertionError("unreachable: exec returned")  # pragma: no cover
