"""find's calibrated score: the formula on small tensors, and on the sample scene that background
regions score low and objects high whatever the model's logit scale (a stand-in for another model)."""

from __future__ import annotations

import math
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from generate import SAMPLE_SCENE, sample_crop

from geoalign_core.inference import Predictor, calibration
from geoalign_core.inference.calibration import OFFSET, Calibration


def test_calibration_formula_on_small_tensors():
    z = torch.tensor([[-3.0, 0.0], [-2.0, 1.0], [-1.0, 2.0], [0.0, 3.0], [5.0, 10.0]])  # [K=5, N=2] log-odds
    cal = Calibration.from_logits(z)
    assert cal.n_regions == 5 and cal.active
    assert torch.allclose(cal.centre, torch.tensor([-1.0, 2.0], dtype=torch.float64))
    q = torch.quantile(z.double(), 0.15866, dim=0)
    assert torch.allclose(cal.spread, torch.tensor([-1.0, 2.0], dtype=torch.float64) - q)
    # a raw probability whose log-odds is the median scores sigmoid(-OFFSET); 2 spreads up: 0.5
    p_med = torch.sigmoid(torch.tensor([-1.0, 2.0]))
    got = cal.score(p_med, torch.tensor([0, 1])).float()
    assert torch.allclose(got, torch.full((2,), 1 / (1 + math.exp(OFFSET))), atol=1e-6)
    up = torch.sigmoid(cal.centre + OFFSET * cal.spread).float()
    assert torch.allclose(cal.score(up, torch.tensor([0, 1])).float(), torch.full((2,), 0.5), atol=1e-5)
    # raw_threshold inverts score, per phrase; increasing in the score
    for s in (0.05, 0.3, 0.5, 0.9):
        thr = cal.raw_threshold(s)
        assert torch.allclose(cal.score(thr, torch.tensor([0, 1])).float(), torch.full((2,), s), atol=1e-4)
    assert bool((cal.raw_threshold(0.3) < cal.raw_threshold(0.6)).all())
    assert cal.raw_threshold(0.0).tolist() == [0.0, 0.0]
    # the far tail is compressed, not saturated: 4 spreads 0.88, 10 spreads ~0.98, 20 spreads ~0.99
    lab = torch.tensor([0, 0, 0, 0])
    far = torch.sigmoid(cal.centre[0] + cal.spread[0] * torch.tensor([4.0, 10.0, 20.0, 21.0], dtype=torch.float64))
    got = cal.score(far, lab)
    assert float(got[0]) == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    assert float(got[1]) == pytest.approx(1 / (1 + math.exp(-(2 + math.log(7.0)))), abs=1e-6)
    assert 0.99 < float(got[2]) < 0.995 and float(got[3]) - float(got[2]) > 1e-4
    for s in (0.9, 0.95):  # the inverse holds in the tail too (raw float32 probabilities saturate near 17 log-odds)
        assert torch.allclose(cal.score(cal.raw_threshold(s), torch.tensor([0, 1])).float(), torch.full((2,), s),
                              atol=1e-4)
    # a flat sample does not blow scores up: the spread has a floor
    flat = Calibration.from_logits(torch.zeros((10, 1)))
    assert float(flat.spread[0]) == calibration.MIN_SPREAD
    # no sample: raw scores kept
    none = Calibration.from_logits(torch.zeros((0, 3)))
    assert not none.active
    assert torch.allclose(none.score(torch.tensor([0.2, 0.7]), torch.tensor([0, 2])).float(), torch.tensor([0.2, 0.7]))
    assert none.raw_threshold(0.3).tolist() == pytest.approx([0.3] * 3)


def test_pick_windows_spreads_over_the_grid():
    from rasterio.windows import Window

    wins = [Window(c, r, 10, 10) for r in range(0, 100, 10) for c in range(0, 100, 10)]
    got = calibration.pick_windows(wins, 16)
    assert len(got) == 16 and got[0] == wins[0] and got[-1] == wins[-1]
    assert len({int(w.row_off) for w in got}) >= 8  # over the rows, not the first one only
    assert calibration.pick_windows(wins[:5], 16) == wins[:5]


def _background_boxes(labels: gpd.GeoDataFrame, bounds, n: int, side: float, seed: int = 0) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    taken = labels.union_all()
    out = []
    while len(out) < n:
        x, y = rng.uniform(bounds.left, bounds.right - side), rng.uniform(bounds.bottom, bounds.top - side)
        box = shapely.box(x, y, x + side, y + side)
        if box.distance(taken) > side / 2:
            out.append(box)
    return gpd.GeoDataFrame(geometry=out, crs=labels.crs)


@pytest.mark.slow
def test_background_scores_low_and_objects_high_at_any_logit_scale(tmp_path):
    """On a crop of the sample scene with the demo model: the labelled cars and buildings score at
    least the default --min-score and background boxes (away from every label) mostly below it,
    at the model's logit scale and at a third of it. The raw probability, shown for contrast,
    drops the cars at the lower scale: the threshold would mean something else for that model."""
    crop = sample_crop(tmp_path / "crop.tif", size=1024, col=512, row=512)
    with rasterio.open(crop) as ds:
        bounds = ds.bounds
    labels = gpd.read_file(SAMPLE_SCENE.parent / "labels.gpkg").clip(shapely.box(*bounds))
    bg = _background_boxes(labels, bounds, 40, side=8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Predictor("geoalign-demo", device="cpu", batch_size=16)
    raw_car_share = {}
    for scale in (1.0, 1 / 3):
        p.model.clip.logit_scale.data += math.log(scale)
        for cls in ("car", "building"):
            objs = labels[labels["class"] == cls]
            assert len(objs) >= 5
            on = p.find(crop, [cls], regions=objs, min_score=0.0)
            off = p.find(crop, [cls], regions=bg, min_score=0.0)
            meta = on.attrs["geoalign"]["calibration"]
            assert meta["n_regions"] > 1000
            assert (on.score >= 0.3).mean() >= 0.9, (scale, cls)
            assert (off.score >= 0.3).mean() <= 0.2, (scale, cls)
            assert off.score.median() < 0.2, (scale, cls)
            if cls == "car":
                m, s = meta["phrases"]["car"]["median"], meta["phrases"]["car"]["spread"]
                sc = on.score.clip(1e-9, 1 - 1e-9)
                raw = 1 / (1 + np.exp(-(m + s * (np.log(sc / (1 - sc)) + OFFSET))))
                raw_car_share[scale] = float((raw >= 0.3).mean())
    assert raw_car_share[1 / 3] < 0.5 <= raw_car_share[1.0]


@pytest.mark.slow
def test_find_min_score_is_applied_to_the_calibrated_score(tmp_path):
    """find keeps exactly the boxes whose calibrated score reaches --min-score: the boxes found at
    a cut are those found at 0 with a score >= the cut, scores unchanged."""
    crop = sample_crop(tmp_path / "crop.tif", size=512, col=640, row=640)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Predictor("geoalign-demo", device="cpu", batch_size=16)
    every = p.find(crop, ["car"], min_score=0.0, max_results=5000, refine=False)
    assert len(every) < 5000
    cut = float(np.median(every.score))
    some = p.find(crop, ["car"], min_score=cut, max_results=5000, refine=False)
    kept = every[every.score >= cut]
    assert 0 < len(some) == len(kept) < len(every)
    assert np.allclose(some.score.to_numpy(), kept.score.to_numpy(), atol=1e-6)
    assert some.attrs["geoalign"]["calibration"]["formula"].startswith("sigmoid(")
