"""``python -m geoalign_core.training.train CONFIG.yaml [--resume] ...``: the torchrun entry point.

Same options as ``geoalign train`` (which calls :func:`run`)::

    torchrun --nproc_per_node 8 -m geoalign_core.training.train geoalign_core/training/configs/vit-b-16_stage1.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from geoalign_core.errors import GeoAlignError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML training config (see geoalign_core/training/configs/)")
    p.add_argument(
        "--resume", nargs="?", const="latest", default=None, metavar="CKPT",
        help="continue from the newest checkpoint in OUT_DIR/checkpoints (or from CKPT); "
        "starts from step 0 when there is none",
    )
    p.add_argument("--max-steps", type=int, default=None, help="override the config's max_steps")
    p.add_argument("--out-dir", default=None, help="override the config's out_dir")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (checkpoint, no export) after N steps, keeping the full run's schedule")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (VALUE read as YAML); repeatable")
    p.add_argument("--overwrite", action="store_true", help="start over in an OUT_DIR that holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from geoalign_core.cli import add_threads

    add_threads(p)


def run(args: argparse.Namespace) -> int:
    from geoalign_core.errors import InputError

    from .config import load_config, parse_override  # yaml: only once a run starts

    overrides = dict(parse_override(s) for s in args.set)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise InputError("--max-steps must be >= 1")
        overrides["max_steps"] = args.max_steps
    if args.out_dir is not None:
        overrides["out_dir"] = args.out_dir
    if args.stop_after is not None and args.stop_after < 1:
        raise InputError("--stop-after must be >= 1")
    cfg = load_config(args.config, overrides)
    from geoalign_core.threads import apply

    apply(getattr(args, "threads", None))  # under torchrun: the cores divided among the local ranks

    from .engine import train

    res = train(cfg, resume=args.resume or False, stop_after=args.stop_after, overwrite=args.overwrite,
                quiet=args.quiet)
    last = res.history[-1]["loss"] if res.history else float("nan")
    if res.stopped:
        print(f"stopped at step {res.step}/{res.total_steps} (loss {last:.4f}); checkpoint {res.checkpoint}; "
              f"continue with --resume")
    else:
        print(f"done: step {res.step}/{res.total_steps}, loss {last:.4f}; weights {res.export}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m geoalign_core.training.train",
                                description="Train GeoAlignCLIP (stage I or II).")
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return run(args)
    except GeoAlignError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
