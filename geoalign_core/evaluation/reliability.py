"""Fitting and checking score calibrations on labelled held-out scenes.

A result is **right** when:

* ``find``: the box's centre lies inside a labelled feature of the phrase's class (and, for a phrase
  such as "red car", of that attribute value too: :func:`phrase_rule`); a phrase with no rule (a
  thing that is in none of the labels) is never right;
* ``tiles`` (tile-classify): the label's class covers at least :data:`TILE_COVER` of the tile.

:func:`collect_find` / :func:`collect_tiles` run the task itself (the same code users run) over
labelled scenes and return each result's calibration features (:data:`~geoalign_core.inference.calibration.FEATURES`)
with its rightness; :func:`fit_logistic` fits the map; :func:`reliability` bins predicted against
observed precision and gives the expected calibration error (ECE).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike

import geopandas as gpd
import numpy as np
import shapely

from ..inference.calibration import FEATURES, LogisticMap
from ..inference.zoom import collecting_zoom_view

__all__ = ["TILE_COVER", "TILE_FEATURES", "PhraseRule", "collect_find", "collect_similar", "collect_tiles",
           "fit_isotonic", "fit_logistic", "object_recall", "phrase_rule", "reliability", "reliability_svg"]

TILE_COVER = 0.10  #: a tile's label is right when its class covers at least this share of the tile
TILE_FEATURES: tuple[str, ...] = ("logodds", "margin")
#: the features that measure evidence for the result: their weights are never negative (:func:`fit_logistic`)
EVIDENCE: tuple[str, ...] = ("logodds", "standout", "above_top", "vocabulary", "zoom", "margin", "cosine")


@dataclass(frozen=True)
class PhraseRule:
    """Which labelled features a phrase names: ``class_field == cls`` and every ``attrs`` field equal."""

    cls: str
    attrs: Mapping[str, str]

    def select(self, labels: gpd.GeoDataFrame, class_field: str) -> gpd.GeoDataFrame:
        keep = labels[class_field].astype(str).str.lower() == self.cls.lower()
        for f, v in self.attrs.items():
            keep &= labels[f].astype(str).str.lower() == v.lower()
        return labels[keep]


def phrase_rule(phrase: str, labels: gpd.GeoDataFrame, class_field: str,
                attr_fields: Sequence[str] = ("color",)) -> PhraseRule | None:
    """The rule of ``phrase`` from the labels' vocabulary: its last words name a class (singular or plural),
    its first words (if any) an attribute value ("red car" -> class car, color red). None: no class matches."""
    from ..inference.vocabulary import _noun_key

    key = _noun_key(phrase)
    classes = {_noun_key(c): str(c) for c in labels[class_field].dropna().astype(str).unique()}
    for ckey, cls in sorted(classes.items(), key=lambda kv: -len(kv[0])):
        if key == ckey:
            return PhraseRule(cls, {})
        if key.endswith(" " + ckey):
            rest = key[: -len(ckey) - 1].strip()
            for f in attr_fields:
                if f in labels.columns and rest in set(labels[f].dropna().astype(str).str.lower()):
                    return PhraseRule(cls, {f: rest})
            return None
    return None


def _object_of(boxes: gpd.GeoSeries, truth: gpd.GeoDataFrame) -> np.ndarray:
    """Per box, the row of ``truth`` whose geometry holds the box's centre (-1: none)."""
    out = np.full(len(boxes), -1, dtype=np.int64)
    if len(boxes) == 0 or len(truth) == 0:
        return out
    c = gpd.GeoSeries(boxes.centroid.values, crs=boxes.crs)
    hit_box, hit_obj = truth.sindex.query(c.values, predicate="intersects")
    out[hit_box[::-1]] = hit_obj[::-1]  # the first hit of each box wins
    return out


def collect_find(predictor, raster: str | PathLike, labels: str | PathLike | gpd.GeoDataFrame, class_field: str,
                 phrases: Sequence[str], *, max_results: int = 50, refine: bool = False,
                 bounds: Sequence[float] | None = None, zoom_view: bool = False) -> dict[str, np.ndarray]:
    """``find`` each phrase alone (min score 0) on ``raster`` (within ``bounds``); per box: features
    ``x [K, F]``, rightness ``y [K]``, the phrase's index ``phrase [K]``, the labelled object holding its centre
    ``obj [K]`` (-1: none; numbered per phrase), its centre ``cx, cy`` and the ``score`` find gave it (NaN when
    uncalibrated) and whether its ``zoom`` feature was measured ``zoomed [K]`` (``zoom_view``: computed even when
    the card has no ``find:zoom`` map, see :mod:`~geoalign_core.inference.zoom`); per phrase: ``n_objects [P]``,
    the labelled objects it names (inside ``bounds``)."""
    lab = labels if isinstance(labels, gpd.GeoDataFrame) else gpd.read_file(labels)
    keys = ("x", "y", "phrase", "obj", "cx", "cy", "score", "zoomed")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    n_objects = np.zeros(len(phrases), dtype=np.int64)
    for i, ph in enumerate(phrases):
        with collecting_zoom_view(predictor) if zoom_view else contextlib.nullcontext():
            g = predictor.find(raster, [ph], min_score=0.0, max_results=max_results, refine=refine, bounds=bounds)
        rule = phrase_rule(ph, lab, class_field)
        truth = rule.select(lab, class_field) if rule is not None else lab.iloc[:0]
        if g.crs is not None and truth.crs is not None:
            truth = truth.to_crs(g.crs)
        if bounds is not None and len(truth):
            c = truth.geometry.representative_point()
            truth = truth[(c.x >= bounds[0]) & (c.x <= bounds[2]) & (c.y >= bounds[1]) & (c.y <= bounds[3])]
        truth = truth.reset_index(drop=True)
        n_objects[i] = len(truth)
        if len(g) == 0:
            continue
        obj = _object_of(g.geometry, truth)
        cen = g.geometry.centroid
        parts["x"].append(np.asarray(g.attrs["score_features"], dtype=np.float64))
        # the score the user saw (NaN from an uncalibrated model, whose value is not a probability)
        parts["score"].append(g["score"].to_numpy(np.float64) if "score" in g.columns else np.full(len(g), np.nan))
        parts["y"].append(obj >= 0)
        parts["phrase"].append(np.full(len(g), i))
        parts["obj"].append(obj)
        parts["cx"].append(cen.x.to_numpy())
        parts["cy"].append(cen.y.to_numpy())
        parts["zoomed"].append(np.full(len(g), bool(g.attrs["geoalign"].get("zoom_view"))))
    out: dict[str, np.ndarray]
    if not parts["x"]:
        out = {k: np.zeros(0) for k in keys}
        out["x"] = np.zeros((0, len(FEATURES)))
        out["y"] = np.zeros(0, dtype=bool)
        out["zoomed"] = np.zeros(0, dtype=bool)
    else:
        out = {k: np.concatenate(v) for k, v in parts.items()}
    out["n_objects"] = n_objects
    return out


def object_recall(p: np.ndarray, data: Mapping[str, np.ndarray], threshold: float = 0.5) -> tuple[int, int]:
    """``(found, total)``: labelled objects holding the centre of a box scoring >= ``threshold`` (``p [K]``
    the boxes' scores, ``data`` from :func:`collect_find`), and all labelled objects of the phrases."""
    hit = (np.asarray(p) >= threshold) & (data["obj"] >= 0)
    found = {(int(ph), int(o)) for ph, o in zip(data["phrase"][hit], data["obj"][hit])}
    return len(found), int(np.sum(data["n_objects"]))


def collect_tiles(predictor, raster: str | PathLike, labels: str | PathLike | gpd.GeoDataFrame, class_field: str,
                  classes: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``tile-classify`` ``raster`` with ``classes``; per tile: features of its best class ``x [T, 2]``
    (:data:`TILE_FEATURES`) and whether that class covers >= :data:`TILE_COVER` of the tile ``y [T]``."""
    from ..inference.vocabulary import _noun_key

    lab = labels if isinstance(labels, gpd.GeoDataFrame) else gpd.read_file(labels)
    g = predictor.tile_classify(raster, classes, top_k=1)
    lab = lab.to_crs(g.crs) if g.crs is not None and lab.crs is not None else lab
    keyed = lab.assign(_k=lab[class_field].astype(str).map(_noun_key))
    sindex = keyed.sindex
    y = np.zeros(len(g), dtype=bool)
    best = [str(v) for v in g.attrs["best_class"]]
    for t, (geom, cls) in enumerate(zip(g.geometry, best)):
        cand = keyed.iloc[sindex.query(geom, predicate="intersects")]
        cand = cand[cand["_k"] == _noun_key(cls)]
        if len(cand):
            covered = shapely.union_all(cand.geometry.values).intersection(geom).area
            y[t] = covered >= TILE_COVER * geom.area
    return {"x": np.asarray(g.attrs["score_features"], dtype=np.float64), "y": y}


def collect_similar(predictor, raster: str | PathLike, labels: str | PathLike | gpd.GeoDataFrame, class_field: str,
                    classes: Sequence[str], n_examples: int = 2, max_results: int = 50) -> dict[str, np.ndarray]:
    """``similar`` from ``n_examples`` labelled objects of each class (the first ones in file order); per result
    other than an example: features ``x [K, 2]`` and whether its centre lies in an object of the examples' class."""
    lab = labels if isinstance(labels, gpd.GeoDataFrame) else gpd.read_file(labels)
    xs, ys = [], []
    for cls in classes:
        objs = lab[lab[class_field].astype(str).str.lower() == cls.lower()]
        if len(objs) < n_examples + 1:
            continue
        ex = objs.head(n_examples)
        g = predictor.similar(raster, ex, min_score=-1.0, max_results=max_results)
        if len(g) == 0:
            continue
        truth = objs.to_crs(g.crs) if g.crs is not None and objs.crs is not None else objs
        keep = ~g["example"].to_numpy(bool)
        xs.append(np.asarray(g.attrs["score_features"], dtype=np.float64)[keep])
        ys.append((_object_of(g.geometry, truth.reset_index(drop=True)) >= 0)[keep])
    if not xs:
        return {"x": np.zeros((0, 2)), "y": np.zeros(0, dtype=bool)}
    return {"x": np.concatenate(xs), "y": np.concatenate(ys)}


def fit_logistic(x: np.ndarray, y: np.ndarray, names: Sequence[str] = FEATURES, l2: float = 1e-3,
                 iters: int = 100, nonnegative: Sequence[str] = EVIDENCE) -> LogisticMap:
    """Logistic regression ``P(right) = sigmoid(w . x + b)`` by Newton's method (IRLS) with a small L2
    penalty on ``w`` (not on ``b``); features that never vary get weight 0, and so do ``nonnegative``
    features whose fitted weight comes out negative (the fit is then redone without them): more evidence
    never lowers a probability, so the score keeps the ranking of the evidence and ``find`` can scan with
    the raw threshold of ``--min-score`` (a small held-out set could otherwise fit a map that turns a
    stronger box into a weaker score)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("a calibration needs both right and wrong results")
    dropped: set[int] = set()
    while True:
        m = _fit(x, y, names, l2, iters, dropped)
        bad = [i for i, n in enumerate(names) if n in nonnegative and m.weights.get(n, 0.0) < 0 and i not in dropped]
        if not bad:
            return m
        dropped.update(bad)


def _fit(x: np.ndarray, y: np.ndarray, names: Sequence[str], l2: float, iters: int, dropped: set[int]
         ) -> LogisticMap:
    use = np.asarray([j for j in np.flatnonzero(x.std(axis=0) > 1e-9) if int(j) not in dropped], dtype=np.int64)
    xu = x[:, use]
    mu, sd = xu.mean(axis=0), xu.std(axis=0)
    z = np.hstack([(xu - mu) / sd, np.ones((len(y), 1))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2 * len(y))
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -40, 40)))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    coef = w[:-1] / sd
    bias = float(w[-1] - (coef * mu).sum())
    weights = {n: 0.0 for n in names}
    for j, c in zip(use, coef):
        weights[names[int(j)]] = float(c)
    return LogisticMap(weights, bias, tuple(names))


MIN_BLOCK = 40  #: fit_isotonic: each step of the fitted function holds at least this many results


def fit_isotonic(p: np.ndarray, y: np.ndarray, min_block: int = MIN_BLOCK) -> tuple[list[float], list[float]]:
    """A non-decreasing map of probabilities ``p`` to the share of them that is right (``y``): pool adjacent
    violators, then blocks of fewer than ``min_block`` results merged into their smaller neighbour (merging two
    neighbours keeps the order). Returns ``(knots, values)``: each block's mean ``p`` and share right, applied
    by :func:`~geoalign_core.inference.calibration.isotonic_apply` (linear between knots)."""
    order = np.argsort(np.asarray(p, dtype=np.float64), kind="stable")
    ps, ys = np.asarray(p, dtype=np.float64)[order], np.asarray(y, dtype=np.float64)[order]
    blocks: list[list[float]] = []  # [sum of p, sum of y, count]
    for a, b in zip(ps, ys):
        blocks.append([float(a), float(b), 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [blocks[-1][0] + last[0], blocks[-1][1] + last[1], blocks[-1][2] + last[2]]
    while len(blocks) > 1:
        small = [i for i, b in enumerate(blocks) if b[2] < min_block]
        if not small:
            break
        i = small[0]
        if i == 0:
            j = 1
        elif i == len(blocks) - 1:
            j = i - 1
        else:
            j = i - 1 if blocks[i - 1][2] <= blocks[i + 1][2] else i + 1
        a, c = min(i, j), max(i, j)
        blocks[a:c + 1] = [[blocks[a][k] + blocks[c][k] for k in range(3)]]
    return [b[0] / b[2] for b in blocks], [b[1] / b[2] for b in blocks]


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """Predicted against observed precision in ``bins`` equal-width score bins, the expected calibration
    error (the bins' |observed - predicted| weighted by their share of results) and the precision among
    results scoring >= 0.5."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        if n:
            pred, obs = float(p[m].mean()), float(y[m].mean())
            ece += n / len(p) * abs(obs - pred)
            rows.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": n, "predicted": pred, "observed": obs})
        else:
            rows.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": 0, "predicted": None, "observed": None})
    hi = p >= 0.5
    return {"n": int(len(p)), "n_right": int(y.sum()), "ece": float(ece) if len(p) else None,
            "n_at_0.5": int(hi.sum()), "precision_at_0.5": float(y[hi].mean()) if hi.any() else None,
            "bins": rows}


def reliability_svg(curves: Mapping[str, dict], title: str, size: int = 360) -> str:
    """A reliability diagram as SVG text: per curve (a :func:`reliability` result) the observed precision of
    each non-empty bin against its mean predicted score, with the diagonal of perfect calibration; the
    legend gives each curve's expected calibration error and result count."""
    pad, w = 48, size
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]

    def xy(px: float, py: float) -> tuple[float, float]:
        return pad + px * (w - 2 * pad), w - pad - py * (w - 2 * pad)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{w + 20 * len(curves)}" '
           f'font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{title}</text>']
    x0, y0 = xy(0, 0)
    x1, y1 = xy(1, 1)
    out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#444"/>')
    for t in range(11):
        gx, _ = xy(t / 10, 0)
        _, gy = xy(0, t / 10)
        out.append(f'<line x1="{gx}" y1="{y0}" x2="{gx}" y2="{y0 + 4}" stroke="#444"/>')
        out.append(f'<line x1="{x0 - 4}" y1="{gy}" x2="{x0}" y2="{gy}" stroke="#444"/>')
        if t % 2 == 0:
            out.append(f'<text x="{gx}" y="{y0 + 16}" text-anchor="middle">{t / 10:.1f}</text>')
            out.append(f'<text x="{x0 - 7}" y="{gy + 4}" text-anchor="end">{t / 10:.1f}</text>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#999" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{y0 + 32}" text-anchor="middle">predicted score (bin mean)</text>')
    out.append(f'<text x="14" y="{(y0 + y1) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(y0 + y1) / 2})">observed precision</text>')
    for k, (name, rel) in enumerate(curves.items()):
        c = colours[k % len(colours)]
        pts = [(b["predicted"], b["observed"], b["n"]) for b in rel["bins"] if b["n"]]
        path = " ".join(f"{'M' if i == 0 else 'L'}{xy(p, o)[0]:.1f},{xy(p, o)[1]:.1f}"
                        for i, (p, o, _) in enumerate(pts))
        out.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        for p, o, n in pts:
            px, py = xy(p, o)
            r = 2.5 + 5.0 * (n / max(1, rel["n"])) ** 0.5
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{r:.1f}" fill="{c}" fill-opacity="0.6"/>')
        ece = rel.get("ece")
        out.append(f'<circle cx="{pad}" cy="{w + 6 + 20 * k}" r="5" fill="{c}"/>'
                   f'<text x="{pad + 10}" y="{w + 10 + 20 * k}">{name}: ECE {ece:.3f}, {rel["n"]} results</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
