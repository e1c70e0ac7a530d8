"""``geoalign train CONFIG.yaml [--resume] [--max-steps N] [--out-dir D]``: stage I or II training.

A thin shell over :mod:`geoalign_core.training.train`; under torchrun
use ``torchrun ... -m geoalign_core.training.train CONFIG.yaml`` (same options).
"""

from __future__ import annotations

import argparse

HELP = "train GeoAlignCLIP (stage I or II, per the config)"
DESCRIPTION = ("Train GeoAlignCLIP: stage I (global contrastive, Eq. 1) or stage II (Eq. 5: "
    "RPA, HNA, VIC, HTC) on samples.jsonl data, as the YAML config says.")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=HELP, description=DESCRIPTION)
    from geoalign_core.training.train import add_arguments

    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from geoalign_core.training.train import run

    return run(args)
