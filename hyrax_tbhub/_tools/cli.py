"""``hyrax-tbhub``: demo and inspect (the benchmark is ``python scripts/bench.py`` in a checkout)."""

from __future__ import annotations

import sys

USAGE = """usage: hyrax-tbhub {demo,inspect,run} [options]

  demo      run a small multi-process pipeline into one log and show what landed
  inspect   summarise the runs, tags and counters of a log folder
  run       run a command (e.g. 'hyrax train') with hyrax logging through hyrax_tbhub

'hyrax-tbhub COMMAND --help' for the options of a command. The benchmark is not part of the
installed package: run 'python scripts/bench.py' from a checkout of hyrax_tbhub."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        from .demo import main as run
    elif command == "inspect":
        from .inspect import main as run
    elif command == "run":
        from .run import main as run
    else:
        print(f"hyrax-tbhub: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return int(run(rest) or 0)
