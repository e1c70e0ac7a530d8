"""``python -m geoalign_core.engine``: serve the engine protocol on stdin / stdout.

``--check [--modules a,b]`` imports the model stack (or the given modules) instead, prints
what it found as JSON and exits 0 when everything imports, 1 otherwise. ``--version``
prints the package and protocol versions.
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import __version__
from .protocol import PROTOCOL_VERSION


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m geoalign_core.engine", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version",
                    version=f"geoalign {__version__} (engine protocol {PROTOCOL_VERSION})")
    ap.add_argument("--check", action="store_true", help="import the model stack, print a JSON report, exit")
    ap.add_argument("--modules", default=None, help="with --check: comma-separated modules instead of the stack")
    args = ap.parse_args(argv)
    if args.check:
        from .jobs import STACK, check_modules

        modules = [m for m in (args.modules or "").split(",") if m] or list(STACK)
        report = check_modules(modules)
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    from ..threads import mark
    from .server import main as serve

    mark()  # the first job's thread count takes off the cores other programs keep busy from now
    return serve()


if __name__ == "__main__":
    sys.exit(main())
