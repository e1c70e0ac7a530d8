"""A fine-tuned model's model card: its domain, and its scores calibrated on its own held-out labels.

``geoalign finetune`` holds out the east (or south) part of each scene. This module runs ``find`` there
for every class and for a few phrases of the built-in vocabulary that name none of the classes, labels
each box right (its centre in a labelled object of its phrase) or wrong (anywhere else: the unlabelled
rest of the held-out part is the source of real negatives), fits the card's logistic map
(:mod:`geoalign_core.evaluation.reliability`) and measures it by spatial two-fold cross-validation
(fitted on one half of the held-out part, measured on the other, and the other way round), so that
the precision and calibration error the card reports were not measured on the data that fitted them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import shapely.affinity
import torch

from geoalign_core.card import Domain, ModelCard, raster_is_synthetic
from geoalign_core.evaluation.reliability import collect_find, fit_logistic, object_recall, reliability
from geoalign_core.inference.calibration import SCAN_FEATURES
from geoalign_core.inference.vocabulary import _noun_key

#: phrases of the built-in vocabulary that are scored too, when they name none of the classes
ABSENT_PHRASES = ("airplane", "ship", "tennis court", "swimming pool", "storage tanks")
MIN_EACH = 5  #: a map is fitted only with at least this many right and this many wrong boxes
MAX_RESULTS = 50


def held_out_bounds(raster: str, bounds: Sequence[float] | None, val_fraction: float) -> tuple[float, ...]:
    """The held-out part of ``raster`` (inside ``bounds``) in its CRS, as ``prepare``'s split draws it."""
    import rasterio
    import rasterio.windows

    from geoalign_core.geo.grid import area_window

    with rasterio.open(raster) as ds:
        area = area_window(ds.transform, ds.width, ds.height, bounds, raster)
        if area.width >= area.height:
            line = area.col_off + area.width * (1.0 - val_fraction)
            win = rasterio.windows.Window(line, area.row_off, area.col_off + area.width - line, area.height)
        else:
            line = area.row_off + area.height * (1.0 - val_fraction)
            win = rasterio.windows.Window(area.col_off, line, area.width, area.row_off + area.height - line)
        return tuple(float(v) for v in rasterio.windows.bounds(win, ds.transform))


def labels_frame(raster: str, labels: str, class_field: str, layer: str | None) -> gpd.GeoDataFrame:
    """The labels as polygons in the raster's CRS (any format ``prepare`` reads, pixel-box CSVs included)."""
    from geoalign_core.data.labels import load_labels
    from geoalign_core.geo import RasterSource

    with RasterSource(raster, allow_no_crs=True) as src:
        ls = load_labels(labels, src, class_field, layer=layer)
        t = src.transform
        geoms = [shapely.affinity.affine_transform(f.geom, [t.a, t.b, t.d, t.e, t.c, t.f]) for f in ls.features]
        return gpd.GeoDataFrame({class_field: [f.cls for f in ls.features]}, geometry=geoms, crs=src.crs)


def domain_of(rasters: Sequence[str], start_card: ModelCard | None) -> Domain:
    """What the fine-tuned model now knows: the scenes it was fine-tuned on (pixel size, bands, real or not)."""
    import rasterio

    from geoalign_core.geo.grid import pixel_size_m

    gsds, bands, synthetic = [], set(), True
    for r in rasters:
        with rasterio.open(r) as ds:
            if ds.crs is not None:
                mx, my = pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)
                gsds.append((mx + my) / 2.0)
            bands.add(min(ds.count, 3))
            synthetic &= raster_is_synthetic(ds.tags())
    start = f"; fine-tuned from {start_card.name} ({start_card.domain.line()})" if start_card else ""
    return Domain(kind="synthetic" if synthetic else "real", sensor="",
                  gsd_m=(round(min(gsds), 3), round(max(gsds), 3)) if gsds else None,
                  bands=max(bands) if bands else None, region="",
                  description=f"fine-tuned on {', '.join(Path(r).name for r in rasters)}{start}")


def _halves(data: dict, horizontal: bool) -> np.ndarray:
    c = data["cx"] if horizontal else data["cy"]
    return c >= np.median(c) if len(c) else np.zeros(0, dtype=bool)


def evaluate_held_out(predictor, pairs: Sequence[tuple[str, str]], class_field: str, layer: str | None,
                      bounds: Sequence[float] | None, val_fraction: float, classes: Sequence[str]) -> dict:
    """``find`` on the held-out parts: the collected boxes (:func:`collect_find`) of the classes and absent phrases."""
    class_keys = {_noun_key(c) for c in classes} | {_noun_key(c).split()[-1] for c in classes}
    absent = [p for p in ABSENT_PHRASES if _noun_key(p) not in class_keys]
    phrases = [*classes, *absent]
    datas = []
    for raster, lab in pairs:
        hb = held_out_bounds(raster, bounds, val_fraction)
        frame = labels_frame(raster, lab, class_field, layer)
        d = collect_find(predictor, raster, frame, class_field, phrases, max_results=MAX_RESULTS, bounds=hb)
        d["horizontal"] = np.full(len(d["y"]), (hb[2] - hb[0]) >= (hb[3] - hb[1]))
        datas.append(d)
    keys = ("x", "y", "phrase", "obj", "cx", "cy", "score", "horizontal")
    data = {k: np.concatenate([d[k] for d in datas]) for k in keys}
    data["n_objects"] = np.sum([d["n_objects"] for d in datas], axis=0)
    data["phrases"] = phrases
    return data


def measure(p: np.ndarray, data: dict) -> dict:
    """Precision among boxes >= 0.5, recall of labelled objects, calibration error (``p`` per collected box)."""
    rel = reliability(p, data["y"])
    found, total = object_recall(p, data)
    return {**rel, "objects_found": found, "objects": total, "recall_at_0.5": found / total if total else None}


def calibrate_card(predictor, card: ModelCard, data: dict, fitted_on: str) -> tuple[ModelCard, dict]:
    """Fit ``card``'s find map on ``data`` (from :func:`evaluate_held_out`) and measure it by spatial
    two-fold cross-validation. Too few right or wrong boxes: the card stays uncalibrated (said in ``note``)."""
    y = data["y"]
    x = data["x"][:, : len(SCAN_FEATURES)]  # the scan's features: the fine-tune fits no zoom-view map
    card.calibration.pop("find:zoom", None)  # one inherited from the base model does not describe this model
    card.measured.pop("find:scan", None)
    n_right, n_wrong = int(y.sum()), int((~y).sum())
    if n_right < MIN_EACH or n_wrong < MIN_EACH:
        card.calibration.pop("find", None)
        card.measured.pop("find", None)
        return card, {"note": f"not calibrated: the held-out part gave {n_right} right and {n_wrong} wrong boxes "
                              f"(at least {MIN_EACH} of each are needed); its results show 'standout'"}
    fmap = fit_logistic(x, y, SCAN_FEATURES)
    half = np.where(data["horizontal"], data["cx"], data["cy"])
    second = half >= np.median(half)
    p_cv = np.zeros(len(y))
    folds_ok = True
    for fold in (second, ~second):
        train = ~fold
        if y[train].sum() < 2 or (~y[train]).sum() < 2 or not fold.any():
            folds_ok = False
            break
        m = fit_logistic(x[train], y[train], SCAN_FEATURES)
        p_cv[fold] = m.probability(torch.from_numpy(x[fold])).numpy()
    card.calibration["find"] = {"map": fmap.to_dict(), "fitted_on": fitted_on, "n": int(len(y)), "n_right": n_right,
                                "phrases": list(data["phrases"]),
                                "rule": "a box is right when its centre lies in a labelled object of its class"}
    if folds_ok:
        m = measure(p_cv, data)
        card.measured["find"] = {"on": f"{fitted_on}, spatial two-fold cross-validation",
                                 **{k: v for k, v in m.items() if k != "bins"}}
        return card, {"cross_validated": m}
    card.measured.pop("find", None)
    return card, {"note": "calibrated, but too few right boxes in one half of the held-out part to measure it"}
