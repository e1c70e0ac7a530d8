"""Fine-tuning on a user's own labelled polygons in one call: prepare + stage II training + a
before/after evaluation on a spatially held-out part of the same labels.

:func:`finetune` does, in ``OUT``:

1. ``OUT/data/<raster stem>/``: :func:`geoalign_core.data.prepare_dataset` of every raster with its
   labels, chips of the model's input size every half chip (4x the chips of the default stride),
   background boxes, and the east (or south) ``val_fraction`` of each scene held out as
   ``samples_val.jsonl``;
2. ``OUT/train.yaml`` and ``OUT/run/``: stage II from the starting model: global, region-phrase
   and hard-negative alignment, the hard negatives of each labelled region being find's
   background phrases (:data:`LAMBDAS`, ``background_negatives``), distillation toward the
   frozen start (:data:`DISTILL`), a step count that fits the data (about :data:`EPOCHS`
   passes, :data:`MIN_STEPS` .. :data:`MAX_STEPS`) and a fine-tuning learning rate;
   ``overrides`` (``--set``) change any key;
3. ``OUT/<name>.safetensors``: the fine-tuned model, blended back toward the start when the
   generated reference scene shows forgetting (:data:`ALPHAS`), with the classes' median
   labelled sizes for ``find`` (loads with ``--model OUT/<name>.safetensors``);
4. ``OUT/report.md`` / ``report.json``: on the held-out chips, before and after, region top-1
   among the classes, and object vs background as find scores it (labelled regions whose best
   text is their class, background boxes called a class, against find's background phrases);
   and, to see forgetting, region top-1 on a generated scene of a held-out seed
   (``OUT/reference/``); ``OUT/commands.sh``: the prepare / train / eval commands it ran, for
   experts to take over.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import yaml

from geoalign_core.card import card_path
from geoalign_core.errors import GeoAlignError, InputError
from geoalign_core.outputs import output_lock

from .forgetting import (
    FORGET_TOLERANCE,
    REFERENCE_SEED,
    keep_knowledge,
    load_eval,
    reference_samples,
    reference_top1,
)

__all__ = ["EPOCHS", "FinetuneResult", "finetune"]

EPOCHS = 4  #: passes over the training chips
MIN_STEPS, MAX_STEPS = 30, 400
LR = 1.0e-4  #: half the demo recipe's from-scratch rate (measured: see docs/finetune.md)
BATCH = 16
#: global + region-phrase + hard-negative alignment; with ``background_negatives`` the HNA
#: candidates of a labelled region are its phrase against find's background phrases (and the
#: other classes): the score find reports (measured against lambdas 1,1,0,0,0: docs/finetune.md)
LAMBDAS = (1.0, 1.0, 1.0, 0.0, 0.0)
NUM_CANDIDATES = 12  #: the positive + up to 11 negatives: all of find's background phrases fit
#: distillation toward the frozen start (geoalign_core.training.distill), the first forgetting control; weight
#: interpolation (ALPHAS) stays as the backstop. Measured against 0 and 1 (docs/finetune.md).
DISTILL = 10.0


@dataclass
class FinetuneResult:
    out: Path
    model: Path
    report: Path
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)


def _pairs(rasters: Sequence[str], labels: Sequence[str]) -> list[tuple[str, str]]:
    if not rasters or not labels:
        raise InputError("give at least one raster and one labels file", param="labels")
    if len(labels) == 1:
        return [(r, labels[0]) for r in rasters]
    if len(labels) != len(rasters):
        raise InputError(f"{len(rasters)} rasters and {len(labels)} labels files: give one labels file for all "
                         "rasters, or one per raster in the same order", param="labels")
    return list(zip(rasters, labels))


def _object_vs_background(model, samples: list[dict], classes: list[str], batch: int) -> dict:
    """Object vs background as ``find`` scores it: each region's best text among the bare class
    names and find's background phrases (:func:`~geoalign_core.inference.vocabulary.background_for`
    the classes). Returns the share of held-out labelled regions whose best text is their class
    (higher is better) and the share of background boxes whose best text is a class (lower is better)."""
    import torch.nn.functional as F

    from geoalign_core.evaluation.tasks import encode_sample_regions, region_class
    from geoalign_core.inference.vocabulary import background_for

    texts = [*classes, *background_for(classes)]
    with torch.no_grad():
        text = F.normalize(model.encode_text(texts).float(), dim=-1)
    out: dict = {}
    for key, regions in (("labelled", "regions"), ("background", "background_regions")):
        part = [dict(s, regions=s.get(regions, [])) for s in samples]
        emb, index = encode_sample_regions(model, part, batch, desc=key, progress=False)
        if not index:
            out[key] = (0, None)
            continue
        best = (emb.float() @ text.to(emb.device).T).argmax(dim=1).cpu()
        if key == "labelled":
            want = torch.tensor([classes.index(region_class(samples[i]["regions"][j])) for i, j in index])
            out[key] = (len(index), float((best == want).float().mean()))
        else:
            out[key] = (len(index), float((best < len(classes)).float().mean()))
    return {"n": out["background"][0], "called_a_class": out["background"][1],
            "n_labelled": out["labelled"][0], "labelled_found": out["labelled"][1]}


def _object_sizes(pairs: list[tuple[str, str]], class_field: str, layer: str | None,
                  bounds: Sequence[float] | None) -> dict[str, list[float]]:
    """Per class, the median labelled box's width and height in metres (labels inside ``bounds``
    only, when given): what ``find`` uses as the class's object size."""
    import numpy as np
    import shapely

    from geoalign_core.data.labels import load_labels
    from geoalign_core.geo.grid import area_window, pixel_size_m
    from geoalign_core.geo.raster import RasterSource

    per: dict[str, list[tuple[float, float]]] = {}
    for raster, lab in pairs:
        with RasterSource(raster) as src, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # prepare has said them already
            labels = load_labels(lab, src, class_field, layer=layer, color_field=None, size_field=None,
                                 orientation_field=None)
            mx, my = pixel_size_m(src.crs, src.transform, src.width, src.height)
            win = area_window(src.transform, src.width, src.height, bounds, raster)
            zone = shapely.box(win.col_off, win.row_off, win.col_off + win.width, win.row_off + win.height)
        for f in labels.features:
            if zone.contains(f.geom.centroid):
                x0, y0, x1, y1 = f.geom.bounds
                per.setdefault(f.cls, []).append(((x1 - x0) * mx, (y1 - y0) * my))
    return {c: [round(float(np.median([w for w, _ in v])), 3), round(float(np.median([h for _, h in v])), 3)]
            for c, v in sorted(per.items())}


def _evaluate(model, val: list[Path], classes: list[str]) -> dict:
    from geoalign_core.data import read_samples
    from geoalign_core.evaluation.tasks import eval_regions

    with torch.no_grad():
        reg = eval_regions(model, [str(p) for p in val], classes=classes, batch_size=BATCH, progress=False)
        samples = read_samples([str(p) for p in val])
        bg = _object_vs_background(model, samples, classes, BATCH)
    return {"region_top1": reg["metrics"]["top1"], "n_regions": reg["n"], "per_class": reg.get("per_class"),
            "background_called_a_class": bg["called_a_class"], "n_background": bg["n"],
            "labelled_found": bg["labelled_found"]}


def finetune(
    rasters: Sequence[str | PathLike],
    labels: Sequence[str | PathLike],
    class_field: str,
    start: str,
    out: str | PathLike,
    *,
    name: str | None = None,
    val_fraction: float = 0.3,
    background: int = 2,
    steps: int | None = None,
    lr: float = LR,
    batch_size: int = BATCH,
    device: str = "auto",
    layer: str | None = None,
    alpha: float | None = None,
    bounds: Sequence[float] | None = None,
    overrides: dict | None = None,
    quality_filter: str | None = None,
    keep: float = 0.3,
    overwrite: bool = False,
    quiet: bool = False,
    say=print,
) -> FinetuneResult:
    """Fine-tune ``start`` on ``rasters`` + ``labels`` into ``out`` (see the module docstring).

    ``bounds`` (minx, miny, maxx, maxy in the rasters' CRS): only chips inside them, for training
    and the held-out part alike (``prepare --bounds``; the held-out part is the east, or south,
    ``val_fraction`` of the bounds). ``overrides``: training config keys set over finetune's own
    (``--set KEY=VALUE``; e.g. ``lambdas``, ``background_negatives``), written into train.yaml."""
    out = Path(out)
    _check_out(out, overwrite)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder's parent does not exist: {parent}", param="out")
    # one fine-tuning per folder at a time: a second run into the same --out is refused at once
    with output_lock(out, what="fine-tuning into"):
        _check_out(out, overwrite)  # again, now that no other run can write there
        created = not out.exists()
        try:
            return _finetune(rasters, labels, class_field, start, out, name=name, val_fraction=val_fraction,
                             background=background, steps=steps, lr=lr, batch_size=batch_size, device=device,
                             layer=layer, alpha=alpha, bounds=bounds, overrides=overrides,
                             quality_filter=quality_filter, keep=keep, overwrite=overwrite, quiet=quiet, say=say)
        except GeoAlignError:
            if created:  # bad input (labels, bounds, ...) found on the way: leave nothing behind
                shutil.rmtree(out, ignore_errors=True)
            raise


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"the output must be a folder; {out} is a file", param="out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} is not empty: choose another --out or add --overwrite", param="overwrite")


def _finetune(rasters: Sequence[str | PathLike], labels: Sequence[str | PathLike], class_field: str, start: str,
              out: Path, *, name: str | None, val_fraction: float, background: int, steps: int | None, lr: float,
              batch_size: int, device: str, layer: str | None, alpha: float | None, bounds: Sequence[float] | None,
              overrides: dict | None, quality_filter: str | None, keep: float, overwrite: bool, quiet: bool,
              say) -> FinetuneResult:
    from geoalign_core.data import PrepareOptions, prepare_dataset

    from .config import config_from_dict
    from .engine import train

    t0 = time.perf_counter()
    pairs = _pairs([str(r) for r in rasters], [str(v) for v in labels])
    if not 0.0 < float(val_fraction) < 1.0:
        raise InputError(f"val fraction must be in (0, 1) to measure before/after; got {val_fraction}",
                         param="val_fraction")
    for key in ("data", "out_dir", "export", "model"):
        if key in (overrides or {}):
            raise InputError(f"--set {key}: finetune sets it itself")
    if overrides:  # bad keys or values: said before any work
        config_from_dict({"model": str(start), "stage": 2, "data": [str(out)], "out_dir": str(out / "run"),
                          "max_steps": MIN_STEPS, **overrides}, "--set")
    scorer = None
    if quality_filter is not None:  # the data-quality filter, scored by the model being fine-tuned
        from geoalign_core.data.quality import make_scorer

        if not 0.0 < float(keep) <= 1.0:
            raise InputError(f"keep must be in (0, 1]; got {keep}", param="keep")
        scorer = make_scorer(quality_filter, model=str(start), device=device)
    start_model = load_eval(str(start), device)  # its input size sets the chips; evaluated "before" below
    chip = int(start_model.image_size)
    name = name or f"{Path(str(start)).stem}-finetuned"
    if overwrite and out.exists():
        for sub in ("data", "run"):
            shutil.rmtree(out / sub, ignore_errors=True)
    (out / "data").mkdir(parents=True, exist_ok=True)

    commands: list[str] = []
    data_dirs, val_files, classes = [], [], set()
    n_background = 0
    stems: dict[str, int] = {}
    for raster, lab in pairs:
        stem = Path(raster).stem
        stems[stem] = stems.get(stem, 0) + 1
        d = out / "data" / (stem if stems[stem] == 1 else f"{stem}-{stems[stem]}")
        opts = PrepareOptions(class_field=class_field, chip_size=chip, stride=max(8, chip // 2),
                              val_fraction=val_fraction, background=background, layer=layer,
                              bounds=None if bounds is None else tuple(float(v) for v in bounds))
        summary = prepare_dataset(raster, lab, d, opts, overwrite=True, progress=not quiet)
        if scorer is not None:
            from geoalign_core.data.quality import filter_dataset

            say(filter_dataset(d, scorer, keep).line())
        classes.update(summary.class_counts)
        n_background += summary.background
        data_dirs.append(d)
        val_files.append(d / "samples_val.jsonl")
        say(f"prepared {raster}: {summary.chips_written - summary.chips_val} training and {summary.chips_val} "
            f"held-out chips, {summary.regions} labelled regions, {summary.background} background boxes")
        commands.append(shlex.join(["geoalign", "prepare", raster, lab, "--class-field", class_field, "--out", str(d),
                                    "--chip-size", str(chip), "--stride", str(max(8, chip // 2)),
                                    "--val-fraction", f"{val_fraction:g}", "--background", str(background),
                                    *(["--layer", layer] if layer else []),
                                    *(["--bounds", ",".join(str(v) for v in opts.bounds)] if opts.bounds else []),
                                    *(["--quality-filter", quality_filter, "--keep", f"{keep:g}", "--quality-model",
                                       str(start)] if scorer is not None else []),
                                    "--overwrite"]))
    classes_l = sorted(classes)
    if len(classes_l) == 1:
        say(f"warning: one class ({classes_l[0]}): " + ("the background boxes are its only contrast" if n_background
            else "and no background box fitted between the labels: find's background phrases are its only contrast"))
    n_train = sum(len((d / "samples.jsonl").read_text(encoding="utf-8").splitlines()) for d in data_dirs)
    if n_train == 0:
        raise InputError("no training chip: the labels leave nothing west of the held-out part", param="labels")
    bs = max(1, min(int(batch_size), n_train))
    n_steps = int(steps) if steps else min(MAX_STEPS, max(MIN_STEPS, EPOCHS * -(-n_train // bs)))
    cfg_raw = {
        "model": str(start), "stage": 2, "data": [str(d) for d in data_dirs], "out_dir": str(out / "run"),
        "export": f"{name}.safetensors", "lambdas": list(LAMBDAS),
        "class_prompt_prob": 0.5, "caption_prompt_prob": 0.5, "regions_per_image": 8,
        "num_candidates": NUM_CANDIDATES, "background_negatives": True, "distill": DISTILL,
        "crop_size": max(8, chip // 2), "lr": float(lr), "weight_decay": 1e-3,
        "warmup_steps": max(1, n_steps // 10), "max_steps": n_steps, "batch_size": bs, "num_workers": 0,
        "device": device, "log_every": max(1, n_steps // 20), "ckpt_every": n_steps, "keep_checkpoints": 1,
        "tensorboard": False, "seed": 0,
    }
    cfg_raw.update(overrides or {})
    config = config_from_dict(cfg_raw, str(out / "train.yaml"))
    (out / "train.yaml").write_text(yaml.safe_dump(cfg_raw, sort_keys=False))
    commands.append(shlex.join(["geoalign", "train", str(out / "train.yaml"), "--overwrite"]))
    say(f"training: {config.max_steps} steps of {config.batch_size} chips ({n_train} training chips), "
        f"lr {config.lr:g}, from {start}")
    ref, ref_classes = reference_samples(out, chip, quiet)
    before = _evaluate(start_model, val_files, classes_l)
    before["reference_top1"] = reference_top1(start_model, ref, ref_classes)
    result = train(config, overwrite=True, quiet=quiet)
    final = out / f"{name}.safetensors"
    sizes = {c: v for c, v in _object_sizes(pairs, class_field, layer, bounds).items() if c in classes_l}
    chosen, tried = keep_knowledge(start_model, Path(result.export), final, ref, ref_classes,
                                    before["reference_top1"], alpha, device, sizes)
    if sizes:
        say("object sizes for find: " + ", ".join(f"{c} {w:g} x {h:g} m" for c, (w, h) in sizes.items()))
    say(f"weight interpolation with the start: alpha {chosen:g} ("
        + ", ".join(f"{a:g}: reference top-1 {v:.3f}" for a, v in tried) + ")")
    after = _evaluate(load_eval(str(final), device), val_files, classes_l)
    after["reference_top1"] = dict(tried)[chosen]
    calibration = _calibrate(start_model, final, pairs, class_field, layer, bounds, val_fraction, classes_l,
                             device, before, after, say)
    for m in (str(start), str(final)):
        commands.append(shlex.join(["geoalign", "eval", "regions", "--data", *[str(v) for v in val_files],
                                    "--model", m, "--classes", ",".join(classes_l)]))
    (out / "commands.sh").write_text("#!/bin/sh\n# what geoalign finetune ran (in this order)\nset -e\n"
                                     + "\n".join(commands) + "\n")
    report = {"start": str(start), "model": str(final), "classes": classes_l, "steps": config.max_steps,
              "overrides": overrides or {},
              "quality_filter": None if scorer is None else {"name": quality_filter, "keep": float(keep)},
              "bounds": None if bounds is None else [float(v) for v in bounds],
              "alpha": chosen, "alphas_tried": [[a, v] for a, v in tried], "object_sizes_m": sizes,
              "batch_size": config.batch_size, "lr": float(config.lr), "train_chips": n_train,
              "val_fraction": float(val_fraction),
              "before": before, "after": after, "calibration": calibration,
              "card": str(card_path(final)), "seconds": round(time.perf_counter() - t0, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    lines = _report_lines(report)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return FinetuneResult(out, final, out / "report.md", before, after, lines)


def _calibrate(start_model, final: Path, pairs, class_field: str, layer: str | None, bounds, val_fraction: float,
               classes: list[str], device: str, before: dict, after: dict, say) -> dict:
    """The fine-tuned model's card (domain, vocabulary, scores calibrated on the held-out part) beside its
    weights, and find's precision and recall on the held-out part before and after, with real negatives
    (the unlabelled rest of the held-out part; :mod:`geoalign_core.training.calibrate`)."""
    from geoalign_core.card import ModelCard, save_card
    from geoalign_core.inference import Predictor

    from .calibrate import calibrate_card, domain_of, evaluate_held_out, measure

    start_card = getattr(start_model, "card", None)
    vocab = None
    if start_card is not None and start_card.vocabulary:
        vocab = sorted(set(start_card.vocabulary) | {w for c in classes for w in c.lower().split()})
    card = ModelCard(name=final.stem, domain=domain_of([r for r, _ in pairs], start_card),
                     description=f"fine-tuned by geoalign finetune on classes {', '.join(classes)}",
                     vocabulary=vocab)
    fitted_on = (f"the held-out {val_fraction:g} of {len(pairs)} fine-tuning scene(s) "
                 f"({', '.join(Path(r).name for r, _ in pairs)})")
    out: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pred = Predictor(str(final), device=device)
        pred.model.card = card  # uncalibrated while its boxes are collected
        data = evaluate_held_out(pred, pairs, class_field, layer, bounds, val_fraction, classes)
        card, info = calibrate_card(pred, card, data, fitted_on)
        out.update(info)
        # before: the start model as users had it (its own card's calibration, if any)
        pb = Predictor(start_model, device=device)
        bdata = evaluate_held_out(pb, pairs, class_field, layer, bounds, val_fraction, classes)
    if "cross_validated" in info:
        after["find_held_out"] = info["cross_validated"]
    if len(bdata["score"]) and np.isfinite(bdata["score"]).all():  # the start model's scores as users saw them
        before["find_held_out"] = measure(bdata["score"], bdata)
    save_card(card, card_path(final))
    say(f"model card: {card_path(final)} ({card.domain_line()})" + (f"; {info['note']}" if "note" in info else ""))
    return {k: v for k, v in out.items() if k != "cross_validated"}


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:.0%}" if pct else f"{v:.3f}"


def _report_lines(r: dict) -> list[str]:
    b, a = r["before"], r["after"]
    return [
        f"# Fine-tuning report: {Path(r['model']).name}",
        "",
        f"From `{r['start']}`, {r['steps']} steps of {r['batch_size']} chips ({r['train_chips']} training chips), "
        f"lr {r['lr']:g}; classes: {', '.join(r['classes'])}; {r['seconds']:.0f} s. Weights: {r['alpha']:g} x "
        f"fine-tuned + {1 - r['alpha']:g} x start (the largest share that keeps the reference scene within "
        f"{FORGET_TOLERANCE:g}; tried {', '.join(f'{a:g}: {v:.3f}' for a, v in r['alphas_tried'])}).",
        f"Measured on the held-out {r['val_fraction']:g} of each scene (its east end, or south when taller), "
        "never seen in training." if not r.get("bounds") else
        f"Only chips inside the bounds {', '.join(f'{v:.10g}' for v in r['bounds'])}; measured on their held-out "
        f"{r['val_fraction']:g} (the east end, or south when taller), never seen in training.",
        "",
        "| held-out measure | before | after |",
        "|---|---|---|",
        f"| region top-1 among the classes ({a['n_regions']} labelled regions) | {_fmt(b['region_top1'])} | "
        f"{_fmt(a['region_top1'])} |",
        *_negatives_rows(b, a),
        *_find_rows(b, a),
        f"| forgetting: region top-1 on a generated reference scene (seed {REFERENCE_SEED}, never trained on; "
        f"within 0.05 of before is the goal) | {_fmt(b.get('reference_top1'))} | {_fmt(a.get('reference_top1'))} |",
        "",
        "The commands that made it are in `commands.sh`; the training config is `train.yaml`.",
        f"Model card (domain and score calibration): `{Path(r['card']).name}`"
        + (f" -- {r['calibration']['note']}" if r.get("calibration", {}).get("note") else "."),
    ]


def _negatives_rows(b: dict, a: dict) -> list[str]:
    """Object vs background on the held-out chips: only with background boxes (real negatives)."""
    if not a.get("n_background"):
        return ["| object vs background on held-out chips | not measured: no background box (no negatives) | |"]
    return [
        f"| labelled regions whose best text is their class, against find's background phrases (higher is "
        f"better) | {_fmt(b.get('labelled_found'), True)} | {_fmt(a.get('labelled_found'), True)} |",
        f"| background boxes called a class, same texts ({a['n_background']} boxes; lower is better) | "
        f"{_fmt(b['background_called_a_class'], True)} | {_fmt(a['background_called_a_class'], True)} |",
    ]


def _find_rows(b: dict, a: dict) -> list[str]:
    """``find`` on the held-out part, every box outside a labelled object counted wrong (real negatives)."""
    fb, fa = b.get("find_held_out") or {}, a.get("find_held_out") or {}

    def prec(f: dict) -> str:
        return "n/a" if f.get("precision_at_0.5") is None else f"{f['precision_at_0.5']:.0%} of {f['n_at_0.5']}"

    def rec(f: dict) -> str:
        return "n/a" if f.get("recall_at_0.5") is None else f"{f['objects_found']} of {f['objects']}"

    def ece(f: dict) -> str:
        return "n/a" if f.get("ece") is None else f"{f['ece']:.3f}"

    if not fb and not fa:
        return ["| find on the held-out part | not measured (too few right or wrong boxes to calibrate) | |"]
    return [
        f"| find on the held-out part: boxes scoring >= 0.5 that are on a labelled object (precision; every box "
        f"elsewhere counts wrong) | {prec(fb)} | {prec(fa)} |",
        f"| labelled held-out objects with a box >= 0.5 centred on them (recall) | {rec(fb)} | {rec(fa)} |",
        f"| expected calibration error of find's scores (after: spatial two-fold cross-validation) | {ece(fb)} | "
        f"{ece(fa)} |",
    ]
