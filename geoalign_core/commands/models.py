"""``geoalign models [list | info NAME | download NAME]``: the model zoo and its model cards."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo, show a model's card, or download a model for offline use")
    p.add_argument("action", nargs="?", default="list", choices=("list", "info", "download"))
    p.add_argument("name", nargs="?", help="zoo name (for info and download; info also takes a checkpoint path)")
    p.set_defaults(func=run)


def _card_of(name: str):
    from .. import zoo_table as zoo  # the table without torch
    from ..card import load_card
    from ..errors import InputError

    if name in zoo.ZOO:
        return zoo.weights_path(zoo.ZOO[name]), load_card(zoo.weights_path(zoo.ZOO[name]))
    path = Path(name)
    if path.is_file():
        return path, load_card(path)
    raise InputError(f"unknown model {name!r}: not a zoo name ({', '.join(zoo.ZOO)}) or a checkpoint file")


def _info(name: str) -> None:
    from ..card import card_path

    weights, card = _card_of(name)
    print(f"model: {name}")
    print(f"weights: {weights}" + ("" if weights.is_file() else " (not downloaded)"))
    if card is None:
        print(f"card: none ({card_path(weights)} does not exist): unknown training domain; uncalibrated "
              "(results show raw evidence such as 'standout', not probabilities)")
        return
    d = card.domain
    print(f"card: {card_path(weights)}")
    if card.description:
        print(f"about: {card.description}")
    print(f"trained on: {d.line()}" + (f" -- {d.description}" if d.description else ""))
    if card.vocabulary:
        print(f"vocabulary: {len(card.vocabulary)} words seen in training (phrases with other words are unknown to it)")
    if card.object_sizes:
        sizes = ", ".join(f"{k} {w:g} x {h:g} m" for k, (w, h) in card.object_sizes.items())
        print(f"typical object sizes (find uses them for phrases naming these classes): {sizes}")
    if not card.calibration:
        print("calibration: none (uncalibrated)")
    for task, cal in card.calibration.items():
        print(f"calibration ({task}): fitted on {cal.get('fitted_on', '?')} ({cal.get('n', '?')} results, "
              f"{cal.get('n_right', '?')} right)")
    for task, m in card.measured.items():
        prec = m.get("precision_at_0.5")
        ece = m.get("ece")
        at = (f"precision {prec:.2f} among {m.get('n_at_0.5')} results scoring >= 0.5" if prec is not None
              else "no result scored >= 0.5")
        calib = f"; expected calibration error {ece:.3f} over {m.get('n')} results" if ece is not None else ""
        print(f"measured ({task}) on {m.get('on', '?')}: {at}{calib}")


def run(args: argparse.Namespace) -> int:
    from .. import zoo_table as zoo  # list and info: the table and the cards, without torch
    from ..errors import InputError

    if args.action == "download":
        if not args.name:
            raise InputError("models download needs a NAME (see `geoalign models list`)")
        from ..zoo import download

        path = download(args.name)
        print(f"{args.name}: {path}")
        return 0
    if args.action == "info":
        if not args.name:
            raise InputError("models info needs a NAME (see `geoalign models list`)")
        _info(args.name)
        return 0
    from ..card import load_card

    print(f"cache: {zoo.cache_dir()} (offline: place a model's weights file in <cache>/<name>/)")
    header = f"{'name':22} {'arch':14} {'offline':8} {'calibrated':11} {'trained on':28} source"
    print(header)
    print("-" * len(header))
    for e in zoo.ZOO.values():
        src = "bundled" if e.repo is None else f"{e.repo}/{e.filename}"
        avail = "yes" if zoo.is_available(e.name) else "no"
        card = load_card(zoo.weights_path(e))
        cal = "yes" if card is not None and card.calibrated else "no"
        domain = card.domain.line() if card is not None else "unknown (no card)"
        print(f"{e.name:22} {e.arch:14} {avail:8} {cal:11} {domain[:28]:28} {src}")
    return 0
