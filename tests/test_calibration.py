"""Scores a user can trust: the calibration map and its inverse, the model card that carries it, and what the
user sees (absent things find nothing, "none of these", out-of-domain warnings, scores that differ)."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from cli_helpers import cli
from generate import SAMPLE_SCENE, sample_crop

from geoalign_core import load_model
from geoalign_core.card import Domain, ModelCard, card_path, domain_warnings, load_card, phrase_object_size, save_card
from geoalign_core.evaluation.reliability import fit_logistic, phrase_rule, reliability
from geoalign_core.inference import Predictor, calibration
from geoalign_core.inference.calibration import FEATURES, LogisticMap, SceneStats, Scorer
from geoalign_core.inference.vocabulary import COMPETITORS, NONE_LABEL, competitors_for


def _quiet_predictor(model="geoalign-demo") -> Predictor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor(model, device="cpu", batch_size=16)


# ---------------------------------------------------------------------------- the map and its inverse
def test_scene_stats_and_features_on_small_tensors():
    z = torch.tensor([[-3.0, 0.0], [-2.0, 1.0], [-1.0, 2.0], [0.0, 3.0], [5.0, 10.0]])  # [K=5, N=2] log-odds
    st = SceneStats.from_logodds(z)
    assert st.n_regions == 5
    assert torch.allclose(st.centre, torch.tensor([-1.0, 2.0], dtype=torch.float64))
    q = torch.quantile(z.double(), 0.15866, dim=0)
    assert torch.allclose(st.spread, st.centre - q)
    assert torch.allclose(st.top, torch.quantile(z.double(), 0.99, dim=0))
    x = calibration.features(torch.tensor([1.0, 4.0]), torch.tensor([0, 1]), st, torch.tensor([0.0, 1.0]))
    assert x.shape == (2, len(FEATURES))
    assert float(x[0, 0]) == 1.0 and float(x[0, 1]) == pytest.approx((1.0 + 1.0) / float(st.spread[0]))
    assert float(x[1, 2]) == pytest.approx((4.0 - float(st.top[1])) / float(st.spread[1]))
    assert x[:, 3].tolist() == [1.0, 4.0]  # no vocabulary log-odds given: the scan's (their upper bound)
    assert x[:, 4].tolist() == [0.0, 1.0]
    flat = SceneStats.from_logodds(torch.zeros((10, 1)))
    assert float(flat.spread[0]) == calibration.MIN_SPREAD


def test_scorer_probability_and_raw_threshold_invert_each_other():
    st = SceneStats.from_logodds(torch.randn(400, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    m = LogisticMap({"logodds": 0.8, "standout": 0.5, "above_top": 0.7, "vocabulary": 0.6, "unknown": -4.0}, -1.5)
    sc = Scorer(st, m).with_unknown([False, True, False])
    labels = torch.tensor([0, 1, 2])
    for s in (0.05, 0.3, 0.5, 0.9):
        thr = sc.raw_threshold(s)  # exact when the vocabulary log-odds equal the scan's (their upper bound)
        assert torch.allclose(sc.score(thr, labels).float(), torch.full((3,), s), atol=1e-4)
        lower = calibration.logodds(thr.double()) - 1.0  # the vocabulary fits better: the score is lower
        assert bool((sc.score(thr, labels, lower) < s).all())
    assert bool((sc.raw_threshold(0.3) < sc.raw_threshold(0.6)).all())
    assert sc.raw_threshold(0.0).tolist() == [0.0, 0.0, 0.0]
    # the score is sigmoid(w . x + b) of the box's features
    raw = torch.tensor([0.2, 0.6, 0.9])
    zv = torch.tensor([-3.0, 0.1, 1.0], dtype=torch.float64)
    x = calibration.features(calibration.logodds(raw), labels, st, torch.tensor([0.0, 1.0, 0.0]), zv)
    assert torch.equal(x[:, 3], zv)
    want = torch.sigmoid(x[:, :5] @ torch.tensor([0.8, 0.5, 0.7, 0.6, -4.0], dtype=torch.float64) - 1.5)
    assert torch.allclose(sc.score(raw, labels, zv), want)
    # an unknown phrase scores lower than a known one with the same evidence
    assert float(sc.score(torch.tensor([0.6]), torch.tensor([1]))) < float(
        Scorer(st, m).with_unknown([False, False, False]).score(torch.tensor([0.6]), torch.tensor([1])))
    # uncalibrated: the value is the standout, and min_score still selects by sigmoid(standout - 2)
    un = Scorer(st, None)
    assert un.column == "standout" and Scorer(st, m).column == "score"
    assert torch.allclose(un.score(raw, labels), x[:, 1])
    thr = un.raw_threshold(0.5)
    assert torch.allclose(un.score(thr, labels).float(), torch.full((3,), 2.0), atol=1e-3)


def test_zoom_feature_is_capped_at_the_scan_and_its_map_keeps_the_threshold_an_upper_bound():
    """The zoom view's log-odds are a feature capped at the scan's; a map that reads them scans with a threshold
    that is exact when they equal the scan's and too low (never too high) otherwise; a map without them ignores
    them."""
    st = SceneStats.from_logodds(torch.randn(400, 2, generator=torch.Generator().manual_seed(1)))
    labels = torch.tensor([0, 1])
    z = torch.tensor([0.5, 2.0], dtype=torch.float64)
    x = calibration.features(z, labels, st, zoom=torch.tensor([3.0, -1.0], dtype=torch.float64))
    assert x.shape == (2, len(FEATURES)) and FEATURES[-1] == "zoom"
    assert x[:, 5].tolist() == [0.5, -1.0]  # capped at the scan's log-odds
    assert torch.equal(calibration.features(z, labels, st)[:, 5], z)  # not measured: the upper bound
    zmap = LogisticMap({"logodds": 0.1, "vocabulary": 0.2, "zoom": 0.9}, -0.5, FEATURES)
    sc = Scorer(st, zmap, task="find:zoom")
    assert sc.zoom_view and not Scorer(st, LogisticMap({"logodds": 1.0}, 0.0)).zoom_view
    for s in (0.2, 0.5, 0.8):
        thr = sc.raw_threshold(s)
        assert torch.allclose(sc.score(thr, labels).float(), torch.full((2,), s), atol=1e-4)
        zt = calibration.logodds(thr.double())
        assert bool((sc.score(thr, labels, zt, zt - 1.0) < s).all())  # the zoom view disagrees: lower
    # a scan-only map (fitted on the scan's features) gives the zoom column no weight
    scan = Scorer(st, LogisticMap({"logodds": 0.7}, 0.1, calibration.SCAN_FEATURES))
    raw = torch.tensor([0.3, 0.7])
    assert torch.equal(scan.score(raw, labels), scan.score(raw, labels, zoom=torch.tensor([-9.0, -9.0])))


def test_isotonic_step_is_non_decreasing_follows_the_share_right_and_inverts():
    """Where the evidence saturates (the best-scored results are no more often right than middling ones), the
    fitted step stops growing; it never decreases, holds at least MIN_BLOCK results per step, and its inverse
    gives the smallest probability that reaches a score (none above its top)."""
    from geoalign_core.evaluation.reliability import MIN_BLOCK, fit_isotonic

    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 4000)
    truth = np.minimum(p, 0.7)  # right with probability p, but never more than 70 %
    y = rng.random(4000) < truth
    knots, values = fit_isotonic(p, y)
    assert all(b >= a for a, b in zip(values, values[1:])) and all(b > a for a, b in zip(knots, knots[1:]))
    assert len(knots) <= 4000 // MIN_BLOCK
    q = calibration.isotonic_apply(torch.from_numpy(p), knots, values).numpy()
    assert np.all(np.diff(q[np.argsort(p)]) >= -1e-12)
    for lo, hi in ((0.1, 0.2), (0.4, 0.5), (0.85, 1.0)):
        sel = (p >= lo) & (p < hi)
        assert abs(q[sel].mean() - y[sel].mean()) < 0.06, (lo, hi)
    assert q.max() < 0.8  # the plain probability would promise up to 1.0
    top = np.sort(p[p > knots[-1]])  # above the last step: still in order, by at most TOP_RISE of the gap
    qt = calibration.isotonic_apply(torch.from_numpy(top), knots, values).numpy()
    assert len(top) > 10 and np.all(np.diff(qt) > 0) and qt.max() <= values[-1] + calibration.TOP_RISE * (
        1 - values[-1]) + 1e-12
    for s in (0.05, 0.3, 0.6):
        t = calibration.isotonic_inverse(s, knots, values)
        at = torch.tensor([t, t - 1e-3], dtype=torch.float64)
        got = calibration.isotonic_apply(at, knots, values)
        assert float(got[0]) == pytest.approx(s, abs=1e-9) and float(got[1]) < s
    assert calibration.isotonic_inverse(0.95, knots, values) > 1.0  # never reached
    # a Scorer with the step: its raw threshold still inverts its score
    st = SceneStats.from_logodds(torch.randn(300, 1, generator=torch.Generator().manual_seed(2)))
    sc = Scorer(st, LogisticMap({"logodds": 1.0}, 0.0), torch.zeros(1), None, "find",
                ((tuple(knots), tuple(values)),))
    for s in (0.2, 0.5):
        thr = sc.raw_threshold(s)
        assert float(sc.score(thr, torch.tensor([0]))) == pytest.approx(s, abs=1e-4)
    assert float(sc.raw_threshold(0.95)) > 1.0


def test_fit_logistic_recovers_a_known_map_and_reliability_counts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 4))
    x[:, 3] = rng.integers(0, 2, size=20000)
    w, b = np.array([1.5, -0.5, 0.8, -2.0]), 0.3
    y = rng.random(20000) < 1 / (1 + np.exp(-(x @ w + b)))
    names = ("a", "b", "c", "d")
    m = fit_logistic(x, y, names, l2=1e-6, nonnegative=())
    got = m.vector().numpy()
    assert np.allclose(got, w, atol=0.1) and abs(m.bias - b) < 0.1
    # a feature that must not weigh negatively is left out (weight 0) and the rest refitted
    m2 = fit_logistic(x, y, names, l2=1e-6, nonnegative=("b",))
    assert m2.weights["b"] == 0.0 and abs(m2.weights["a"] - 1.5) < 0.15
    p = m.probability(torch.from_numpy(x)).numpy()
    rel = reliability(p, y)
    assert rel["n"] == 20000 and rel["ece"] < 0.02 and sum(b["n"] for b in rel["bins"]) == 20000
    # a badly calibrated predictor has a large ECE: everything at 0.9, half of it right
    bad = reliability(np.full(1000, 0.9), np.arange(1000) % 2 == 0)
    assert bad["ece"] == pytest.approx(0.4) and bad["precision_at_0.5"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        fit_logistic(x[:10], np.zeros(10, bool), FEATURES)


def test_phrase_rules_and_competitors():
    labels = gpd.read_file(SAMPLE_SCENE.parent / "labels.gpkg")
    r = phrase_rule("red car", labels, "class")
    assert r is not None and r.cls == "car" and dict(r.attrs) == {"color": "red"}
    assert len(r.select(labels, "class")) == int(((labels["class"] == "car") & (labels["color"] == "red")).sum())
    assert phrase_rule("trees", labels, "class").cls == "tree"
    assert phrase_rule("airplane", labels, "class") is None
    assert phrase_rule("purple car", labels, "class") is None
    comp = competitors_for(["red car"], COMPETITORS)
    assert "cars" not in comp and "parking lot" in comp and "airplane" in comp
    assert "trees" not in competitors_for(["tree"]) and "forest" in competitors_for(["tree"])


# ---------------------------------------------------------------------------- the card travels with the model
def test_demo_model_card_is_calibrated_and_describes_its_domain():
    m = load_model("geoalign-demo", device="cpu")
    card = m.card
    assert card is not None and card.calibrated and card.domain.kind == "synthetic"
    assert card.domain.bands == 3 and card.domain.gsd_m is not None
    assert "find" in card.measured and "tiles" in card.calibration
    assert card.unknown_words("airplane") == ["airplane"] and card.unknown_words("red cars") == []
    assert "synthetic" in card.domain_line() and "calibrated" in card.domain_line()


def test_card_beside_a_checkpoint_is_loaded_and_a_missing_one_means_uncalibrated(tmp_path):
    from geoalign_core.zoo import WEIGHTS_DIR

    ckpt = tmp_path / "mine.safetensors"
    shutil.copy(WEIGHTS_DIR / "geoalign-demo.safetensors", ckpt)
    assert load_model(str(ckpt), device="cpu").card is None
    card = ModelCard("mine", Domain(kind="real", gsd_m=(0.1, 0.1), bands=3),
                     calibration={"find": {"map": LogisticMap({"logodds": 1.0}, 0.0).to_dict()}})
    save_card(card, card_path(ckpt))
    assert card_path(ckpt).name == "mine.card.json"
    back = load_model(str(ckpt), device="cpu").card
    assert back is not None and back.calibrated and back.domain.gsd_m == (0.1, 0.1)
    # a broken card is reported and ignored: uncalibrated, not a crash
    card_path(ckpt).write_text(json.dumps({"name": "x", "calibration": {"find": {"map": {"weights": {"logodds": "nan"},
                                                                                           "bias": 0}}}}))
    with pytest.warns(UserWarning, match="ignoring the model card"):
        assert load_card(ckpt) is None


def test_card_object_sizes_match_the_class_a_phrase_names():
    table = {"car": [3.1, 3.1], "swimming pool": [6.9, 6.9], "tree": [5.4, 5.0]}
    assert phrase_object_size("red car", table) == (3.1, 3.1)
    assert phrase_object_size("A Red Cars", table) == (3.1, 3.1)  # case, article, plural
    assert phrase_object_size("swimming pools", table) == (6.9, 6.9)
    assert phrase_object_size("pool", table) is None  # "swimming pool" is the class, not "pool"
    assert phrase_object_size("car park", table) is None  # the object named is the park
    assert phrase_object_size("tree", table) == (5.4, 5.0)
    card = ModelCard.from_dict({"name": "x", "object_sizes": table})
    assert card.object_size("blue car") == (3.1, 3.1) and ModelCard.from_dict(card.to_dict()) == card
    with pytest.raises(ValueError, match="object_sizes"):
        ModelCard.from_dict({"name": "x", "object_sizes": {"car": [0, 2]}})
    # the demo's card: measured on its training scenes, only for classes that fit in a tile
    demo = load_model("geoalign-demo", device="cpu").card
    assert demo is not None and demo.object_size("red car") is not None
    assert demo.object_size("river") is None and demo.object_size("road") is None


def test_find_uses_the_card_size_of_the_named_class_and_a_given_size_wins(tmp_path):
    """"red car" gets the demo card's car size: its boxes have about that size (not the patch grid's 1-2
    patches), and the run metadata says which size was used; ``object_size`` overrides the card; a phrase
    whose class has no typical size (road) gets none."""
    crop = sample_crop(tmp_path / "crop.tif", size=512, col=1024, row=1024)
    p = _quiet_predictor()
    car = p.model.card.object_size("red car")
    g = p.find(crop, ["red car", "road"], min_score=0.0, max_results=20)
    meta = g.attrs.get("geoalign") or {}
    assert meta.get("object_sizes_m") == {"red car": [round(car[0], 3), round(car[1], 3)]}, meta
    b = g[g.phrase == "red car"].geometry.bounds
    side = np.sqrt((b.maxx - b.minx) * (b.maxy - b.miny))
    assert len(side) and np.all(np.abs(side / car[0] - 1) < 0.6)
    g2 = p.find(crop, ["red car"], min_score=0.0, max_results=20, object_size=6.0)
    assert g2.attrs["geoalign"]["object_sizes_m"] == {"red car": [6.0, 6.0]}
    b2 = g2.geometry.bounds
    area = ((b2.maxx - b2.minx) * (b2.maxy - b2.miny)).to_numpy()
    assert np.all((area >= 36.0 / 2.5 - 0.5) & (area <= 36.0 * 2.5 + 0.5))  # boxes near the given size only
    assert np.isclose(area, 36.0, atol=1.0).any()  # windows of that size joined the candidates


@pytest.mark.slow
def test_uncalibrated_model_reports_standout_not_a_probability(tmp_path, capsys):
    from geoalign_core.zoo import WEIGHTS_DIR

    ckpt = tmp_path / "bare.safetensors"
    shutil.copy(WEIGHTS_DIR / "geoalign-demo.safetensors", ckpt)
    crop = sample_crop(tmp_path / "crop.tif", size=256)
    p = _quiet_predictor(str(ckpt))
    g = p.find(crop, ["red car"], max_results=5, refine=False)
    assert "score" not in g.columns and "standout" in g.columns
    assert g.attrs["geoalign"]["score_column"] == "standout"
    t = p.tile_classify(crop, ["tree", "building", "road"])
    assert "score" not in t.columns and "logodds" in t.columns
    rc, out, err = cli(capsys, "find", crop, "red car", "--model", ckpt, "--out", tmp_path / "m.gpkg", "--no-refine")
    assert rc == 0, err
    assert "uncalibrated" in out.splitlines()[0]


# ---------------------------------------------------------------------------- what the user sees
@pytest.mark.slow
def test_absent_phrase_finds_nothing_and_present_one_scores_as_probability(tmp_path):
    """On a crop of the sample scene (never used to fit the demo's calibration): a thing the generator never draws
    finds at most a handful of boxes >= 0.5, the labelled red cars are found with scores that say how likely they
    are right, and the scores of the top boxes are not all the same number."""
    crop = sample_crop(tmp_path / "crop.tif", size=512, col=1024, row=1024)  # holds a dozen red cars
    labels = gpd.read_file(SAMPLE_SCENE.parent / "labels.gpkg")
    with rasterio.open(crop) as ds:
        labels = labels.clip(shapely.box(*ds.bounds))
    p = _quiet_predictor()
    for absent in ("airplane", "baseball field"):
        g = p.find(crop, [absent])
        assert len(g) <= 5, absent
    g = p.find(crop, ["red car"], max_results=10)
    cars = labels[(labels["class"] == "car") & (labels["color"] == "red")]
    assert len(cars) >= 2 and len(g) >= 1
    on_car = np.asarray(shapely.intersects_xy(cars.union_all(), g.geometry.centroid.x, g.geometry.centroid.y))
    # boxes >= 0.5 are mostly right, and the scores are a probability: higher on cars than off them
    assert on_car[g.score.to_numpy() >= 0.5].mean() >= 0.5
    assert ((g.score >= 0.0) & (g.score <= 1.0)).all()
    # a probability: over many boxes the mean score is close to the share of them that is right (150 boxes: a
    # binomial spread of about 0.04; one phrase in one scene can be off by more, docs/scores.md "Limits"), and
    # where the model tells right from wrong, right boxes score higher on average
    scores, rights = [], []
    for phrase, objs in (("red car", cars), ("swimming pool", labels[labels["class"] == "swimming pool"]),
                         ("building", labels[labels["class"] == "building"])):
        got = p.find(crop, [phrase], min_score=0.0, max_results=50, refine=False)
        cc = got.geometry.centroid
        on = np.asarray(shapely.intersects_xy(objs.union_all(), cc.x, cc.y))
        assert len(objs) and on.any() and (~on).any(), phrase
        assert got.score[on].mean() > got.score[~on].mean(), phrase
        assert len(set(np.round(got.score.head(10), 3))) >= 3, phrase  # usable spread: not one number
        scores.append(got.score.to_numpy())
        rights.append(on)
    assert abs(np.concatenate(scores).mean() - np.concatenate(rights).mean()) <= 0.1


def test_find_on_a_raster_reads_the_zoom_view_and_an_index_query_the_scan_alone(tmp_path):
    """The demo's card has a ``find:zoom`` map: ``find`` on a raster computes the zoom view and scores with it;
    a query from an index stays an index query (no image pass) and the card's ``find`` map scores it, still a
    calibrated score; collecting calibration data computes the zoom view from an index whose raster is there;
    a model whose card has no ``find:zoom`` map scores a raster from the scan alone."""
    from geoalign_core.index import SceneIndex
    from geoalign_core.inference import runs
    from geoalign_core.inference.zoom import collecting_zoom_view

    crop = sample_crop(tmp_path / "crop.tif", size=256, col=1024, row=1024)
    p = _quiet_predictor()
    assert p.model.card is not None and p.model.card.score_map("find:zoom").reads("zoom")
    live = p.find(crop, ["red car"], min_score=0.0, max_results=10)
    assert live.attrs["geoalign"]["zoom_view"] is True and len(live)
    feats = live.attrs["score_features"]
    assert np.all(feats[:, 5] <= feats[:, 0] + 1e-9) and np.any(feats[:, 5] < feats[:, 0])  # measured, capped
    g = p.find(crop, ["red car"], max_results=10)
    assert ((g.score >= 0.5) & (g.score <= 1.0)).all()  # the default --min-score holds after the zoom view
    runs.index(p, crop, tmp_path / "crop.parquet")
    idx = SceneIndex.open(tmp_path / "crop.parquet", p)
    from_index = idx.find(["red car"], min_score=0.0, max_results=10)
    assert from_index.attrs["geoalign"]["zoom_view"] is False and len(from_index)
    assert ((from_index.score >= 0.0) & (from_index.score <= 1.0)).all()
    with collecting_zoom_view(p):
        collected = idx.find(["red car"], min_score=0.0, max_results=10)
    assert collected.attrs["geoalign"]["zoom_view"] is True
    assert not np.array_equal(collected.attrs["score_features"][:, 5], collected.attrs["score_features"][:, 0])
    crop.rename(tmp_path / "moved.tif")
    with collecting_zoom_view(p):  # the raster is gone: nothing to look at again
        assert idx.find(["red car"], min_score=0.0, max_results=5).attrs["geoalign"]["zoom_view"] is False
    saved = p.model.card.calibration.pop("find:zoom")
    try:
        assert p.find(tmp_path / "moved.tif", ["red car"], min_score=0.0, max_results=5).attrs["geoalign"][
            "zoom_view"] is False
    finally:
        p.model.card.calibration["find:zoom"] = saved


def test_summary_says_no_matches_for_an_absent_phrase(tmp_path, capsys):
    crop = sample_crop(tmp_path / "crop.tif", size=224)
    rc, out, err = cli(capsys, "find", crop, "airplane", "--out", tmp_path / "a.gpkg", "--no-refine",
                       "--min-score", "0.99")
    assert rc == 0, err
    assert "no matches for 'airplane'" in out
    assert out.splitlines()[0].startswith("model geoalign-demo: trained on synthetic")
    assert "never saw the word(s) 'airplane'" in err


@pytest.mark.slow
def test_tile_classify_says_none_of_these_for_absent_classes(tmp_path):
    crop = sample_crop(tmp_path / "crop.tif", size=448)
    p = _quiet_predictor()
    t = p.tile_classify(crop, ["airplane", "golf course", "desert"])
    assert (t["label"] == NONE_LABEL).mean() >= 0.8
    assert ((t.score >= 0) & (t.score <= 1)).all()
    present = p.tile_classify(crop, ["tree", "building", "road", "parking lot", "swimming pool"])
    assert (present["label"] != NONE_LABEL).mean() > (t["label"] != NONE_LABEL).mean()


@pytest.mark.slow
def test_match_regions_labels_an_unmatched_region_none_of_these(tmp_path):
    crop = sample_crop(tmp_path / "crop.tif", size=448)
    labels = gpd.read_file(SAMPLE_SCENE.parent / "labels.gpkg")
    with rasterio.open(crop) as ds:
        labels = labels.clip(shapely.box(*ds.bounds))
    trees = labels[labels["class"] == "tree"].head(5)
    assert len(trees) >= 3
    p = _quiet_predictor()
    out = p.match_regions(crop, trees, ["swimming pool", "tennis court"])
    assert (out["best_phrase"] == NONE_LABEL).mean() >= 0.6
    assert out.attrs["geoalign"]["n_none"] == int((out["best_phrase"] == NONE_LABEL).sum())
    hit = p.match_regions(crop, trees, ["tree", "swimming pool"])
    assert not (hit["best_phrase"] == "swimming pool").any()  # a tree is never called a pool
    assert hit["tree"].mean() > hit["swimming pool"].mean() and (hit["best_phrase"] == "tree").any()


# ---------------------------------------------------------------------------- the model knows its domain
def test_domain_warnings_name_each_reason():
    card = ModelCard("demo", Domain(kind="synthetic", gsd_m=(0.3, 0.3), bands=3), vocabulary=["car", "red"])
    assert domain_warnings(card, bands=3, gsd_m=0.3, synthetic=True) == []
    real = domain_warnings(card, bands=3, gsd_m=0.3, synthetic=False)
    assert len(real) == 1 and "synthetic scenes only" in real[0] and "geoalign finetune" in real[0]
    one = domain_warnings(card, bands=1, gsd_m=0.3, synthetic=True)
    assert len(one) == 1 and "3-band" in one[0]
    far = domain_warnings(card, bands=3, gsd_m=30.0, synthetic=True)
    assert len(far) == 1 and "30 m pixels" in far[0] and "smaller" in far[0]
    unk = domain_warnings(card, bands=3, gsd_m=0.3, synthetic=True, phrases=["red car", "airplane"])
    assert len(unk) == 1 and "'airplane'" in unk[0]
    assert domain_warnings(None, bands=1, gsd_m=100.0, synthetic=False) == []


def test_demo_model_on_a_real_like_raster_warns_once_per_reason(tmp_path, capsys):
    """A raster without the generator's tag (not made by this project's scene generator), one band, at 3 m."""
    src = sample_crop(tmp_path / "crop.tif", size=224)
    with rasterio.open(src) as ds:
        data, profile = ds.read(1), ds.profile
    t = profile["transform"]
    profile.update(count=1, photometric="MINISBLACK", transform=rasterio.Affine(3.0, 0, t.c, 0, -3.0, t.f))
    one = tmp_path / "pan.tif"
    with rasterio.open(one, "w", **profile) as dst:
        dst.write(data, 1)
    rc, out, err = cli(capsys, "tile-classify", one, "--classes", "tree,road", "--out", tmp_path / "t.gpkg")
    assert rc == 0, err
    assert "synthetic scenes only" in err and "3-band" in err and "3 m pixels" in err
    assert sum("geoalign-demo was trained" in line for line in err.splitlines()) == 3


def test_models_info_and_list_show_the_card(capsys):
    rc, out, err = cli(capsys, "models", "info", "geoalign-demo")
    assert rc == 0, err
    assert "trained on: synthetic" in out and "calibration (find): fitted on" in out
    assert "precision" in out and "typical object sizes" in out and "car 3.1 x 3.1 m" in out
    rc, out, err = cli(capsys, "models", "list")
    assert rc == 0 and "calibrated" in out
    line = next(x for x in out.splitlines() if x.startswith("geoalign-demo"))
    assert " yes " in line and "synthetic" in line
    rc, out, err = cli(capsys, "models", "info", "no-such-model")
    assert rc == 2 and err.startswith("error:")


def test_math_sanity_of_logodds():
    p = torch.tensor([0.5, 0.880797])
    assert torch.allclose(calibration.logodds(p), torch.tensor([0.0, 2.0], dtype=torch.float64), atol=1e-5)
    assert math.isfinite(float(calibration.logodds(torch.tensor([1.0]))))
