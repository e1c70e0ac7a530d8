"""``geoalign models [list | download NAME]``: the model zoo."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo or download a model for offline use")
    p.add_argument("action", nargs="?", default="list", choices=("list", "download"))
    p.add_argument("name", nargs="?", help="zoo name (for download)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import zoo

    if args.action == "download":
        if not args.name:
            from ..errors import InputError

            raise InputError("models download needs a NAME (see `geoalign models list`)")
        path = zoo.download(args.name)
        print(f"{args.name}: {path}")
        return 0
    print(f"cache: {zoo.cache_dir()}")
    header = f"{'name':22} {'arch':14} {'offline':8} {'qgelu':6} {'long':5} {'dense':9} source"
    print(header)
    print("-" * len(header))
    for e in zoo.ZOO.values():
        src = "bundled" if e.repo is None else f"{e.repo}/{e.filename}"
        avail = "yes" if zoo.is_available(e.name) else "no"
        print(
            f"{e.name:22} {e.arch:14} {avail:8} {('yes' if e.quick_gelu else 'no'):6} "
            f"{('yes' if e.long_text else 'no'):5} {e.dense_mode:9} {src}"
        )
    return 0
