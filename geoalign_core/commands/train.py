"""``geoalign train CONFIG.yaml [--resume] [--max-steps N] [--out-dir D]``: stage I or II training.

A thin shell over :mod:`training` (the repository's ``training/`` package); under torchrun
use ``torchrun ... -m geoalign_core.training.train CONFIG.yaml`` (same options).
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train GeoAlignCLIP (stage I or II, per the config)",
        description="Train GeoAlignCLIP: stage I (global contrastive, Eq. 1) or stage II (Eq. 5: "
        "RPA, HNA, VIC, HTC) on samples.jsonl data, as the YAML config says.",
    )
    try:
        from geoalign_core.training.train import add_arguments
    except ModuleNotFoundError as exc:  # installed without the training package
        if exc.name != "training" and not (exc.name or "").startswith("training."):
            raise
        p.add_argument("config")
        p.set_defaults(func=_missing)
        return
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from geoalign_core.training.train import run

    return run(args)


def _missing(args: argparse.Namespace) -> int:  # noqa: ARG001
    from ..errors import InputError

    raise InputError("the training package is not installed (install geoalign from a source checkout)")
