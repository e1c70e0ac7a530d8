"""Predictor and scoring-pass tests on small generated rasters with the tiny random-weight model.

Scores of random weights mean nothing: these tests check mechanics (grids, geometry, CRS,
fields, metadata, caching, cancellation), never score values.
"""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from generate import RES, UTM
from generate import textured_raster as make_raster
from rasterio.transform import Affine
from rasterio.windows import Window

from geoalign_core.errors import GeoAlignError, InputError
from geoalign_core.geo import count_tiles, tile_windows
from geoalign_core.inference import DEFAULT_VOCABULARY, Cancelled, Predictor, scoring
from geoalign_core.inference.find import refine_boxes
from geoalign_core.inference.source import LiveSource
from geoalign_core.inference.vocabulary import NONE_LABEL

CRS = UTM


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor(tiny_model, batch_size=8)


def raster_box(path):
    with rasterio.open(path) as ds:
        return shapely.box(*ds.bounds), ds


# ---------------------------------------------------------------------------- scoring pass
def test_component_boxes_finds_8_connected_components():
    m = torch.zeros(2, 6, 6, dtype=torch.bool)
    m[0, 0, 0] = m[0, 1, 1] = True  # diagonal: one component (8-connectivity)
    m[0, 4:6, 3:6] = True
    m[1, 2, 2] = True
    idx, boxes = scoring.component_boxes(m)
    got = sorted((int(i), *map(int, b)) for i, b in zip(idx, boxes))
    assert got == [(0, 0, 0, 2, 2), (0, 3, 4, 6, 6), (1, 2, 2, 3, 3)]


def test_dense_candidates_and_windows_are_in_input_pixels():
    sim = torch.zeros(1, 14, 14)
    sim[0, 3:5, 6:9] = 1.0
    idx, boxes = scoring.dense_candidates(sim, patch=8)
    assert (idx == 0).all()
    assert [48.0, 24.0, 72.0, 40.0] in boxes.tolist()
    win = scoring.window_candidates(112, 112, 8)
    assert win[0].tolist() == [0.0, 0.0, 112.0, 112.0]
    assert win.min() >= 0 and win.max() <= 112
    assert len(win) == 1 + 13 * 13 + 6 * 6 + 2 * 2  # whole tile + scales 2, 4, 8 patches


def test_scores_are_probabilities():
    img = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(7, 16), dim=-1)
    p = scoring.classify(img, txt, 100.0)
    assert torch.allclose(p.sum(-1), torch.ones(4))
    q = scoring.phrase_probabilities(img, txt, 2, 100.0)
    assert q.shape == (4, 2) and (q.sum(-1) <= 1 + 1e-6).all() and (q >= 0).all()


def test_nms_per_label_caps_each_label():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 1])
    keep = scoring.nms_per_label(boxes, scores, labels, 0.5, cap=1)
    assert keep.tolist() == [0, 3]


# ---------------------------------------------------------------------------- text side
def test_phrase_cache_and_class_templates(predictor):
    n0 = predictor.texts_encoded
    a = predictor.encode_phrases(["a red car", "a ship"])
    b = predictor.encode_phrases(["a ship", "a red car"])
    assert predictor.texts_encoded == n0 + 2
    assert torch.equal(a[0], b[1])
    c = predictor.encode_classes(["forest", "river"])
    assert c.shape == (2, predictor.model.embed_dim)
    assert torch.allclose(c.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert len(DEFAULT_VOCABULARY) >= 45 and len(set(DEFAULT_VOCABULARY)) == len(DEFAULT_VOCABULARY)


# ---------------------------------------------------------------------------- image pass
def test_image_pass_matches_model_and_is_phrase_free(predictor, textured):
    from geoalign_core.geo import RasterSource

    with RasterSource(textured) as src:
        wins = tile_windows(src.width, src.height, 112, 0.0)
        batches = list(predictor.image_pass(src, wins, dense=True))
    tiles = [t for eb in batches for t in eb.tiles]
    assert [t.index for t in tiles] == list(range(len(wins)))
    eb = batches[0]
    assert eb.glob.shape == (len(eb.tiles), predictor.model.embed_dim)
    assert eb.dense.shape[-2:] == (14, 14)
    full = [t for t in eb.tiles if t.valid.all()][0]
    x = predictor.model.preprocess(torch.from_numpy(full.image)[None])
    with torch.no_grad():
        ref = predictor.model.encode_image(x)[0]
    i = eb.tiles.index(full)
    assert torch.allclose(eb.glob[i], ref, atol=1e-4)


# ---------------------------------------------------------------------------- tile-classify
def test_tile_classify_grid_geometry_fields(predictor, textured):
    gdf = predictor.tile_classify(textured, ["forest", "river", "road"], top_k=2, tile_size=112)
    extent, ds = raster_box(textured)
    assert len(gdf) == count_tiles(300, 200, 112, 0.0) == 6
    assert gdf.crs == ds.crs
    assert set(gdf.columns) >= {"label", "score", "top_k", "geometry"}
    assert gdf.geometry.within(extent.buffer(1e-6)).all()
    assert math.isclose(gdf.union_all().area, extent.area, rel_tol=1e-9)  # grid complete
    # a random model's best class is never probably right: "none of these", the best class still in top_k
    assert gdf["label"].isin(["forest", "river", "road", NONE_LABEL]).all()
    assert gdf["score"].between(0, 1).all()
    for label, score, top_k in zip(gdf["label"], gdf["score"], gdf["top_k"]):
        top = json.loads(top_k)
        assert len(top) == 2 and top[0]["score"] >= top[1]["score"]
        if label == NONE_LABEL:
            assert top[0]["score"] < 0.5 and score == pytest.approx(1 - top[0]["score"], abs=1e-5)
        else:
            assert top[0]["label"] == label and score == pytest.approx(top[0]["score"], abs=1e-5)
    meta = gdf.attrs["geoalign"]
    assert meta["classes"] == ["forest", "river", "road"] and meta["tile_size"] == 112
    assert meta["model"] == "GeoAlign-Tiny" and meta["prompt_templates"]


def test_tile_classify_default_vocabulary_bounds_and_overlap(predictor, textured):
    extent, ds = raster_box(textured)
    left, bottom, _, top = ds.bounds
    bounds = (left + 10, bottom + 5, left + 80, top - 5)  # 140 x 190 px
    gdf = predictor.tile_classify(textured, tile_size=64, overlap=0.25, bounds=bounds)
    assert gdf["label"].isin([*DEFAULT_VOCABULARY, NONE_LABEL]).all()
    assert gdf.attrs["geoalign"]["classes"] == list(DEFAULT_VOCABULARY)
    assert "NWPU-RESISC45" in gdf.attrs["geoalign"]["vocabulary_source"]
    assert gdf.geometry.within(shapely.box(*bounds).buffer(1e-6)).all()
    assert math.isclose(gdf.union_all().area, shapely.box(*bounds).area, rel_tol=1e-9)
    with pytest.raises(InputError, match="do not overlap"):
        predictor.tile_classify(textured, ["a"], bounds=(0, 0, 1, 1))


def test_empty_tiles_skipped_and_partial_tiles_kept(predictor, tmp_path):
    def holes(a):
        a[:, :, :120] = 0  # left 120 columns nodata: the first tile column is empty

    path = make_raster(tmp_path / "nd.tif", width=224, height=112, nodata=0, fill=holes)
    gdf = predictor.tile_classify(path, ["a", "b"], tile_size=112)
    assert len(gdf) == 1  # tile 0 (all nodata) skipped, tile 1 (partly valid) kept
    with pytest.raises(InputError, match="no valid pixels"):
        predictor.tile_classify(make_raster(tmp_path / "all.tif", 50, 50, nodata=0, fill=lambda a: a.fill(0)),
                                ["a"])


@pytest.mark.parametrize(
    "kind",
    ["uint16_1band", "float_nan", "rgba", "five_bands", "small"],
)
def test_any_geotiff(predictor, tmp_path, kind):
    if kind == "uint16_1band":
        path = make_raster(tmp_path / "a.tif", count=1, dtype="uint16", nodata=0)
    elif kind == "float_nan":
        def nan_strip(a):
            a[..., :20] = np.nan

        path = make_raster(tmp_path / "a.tif", dtype="float32", fill=nan_strip)
    elif kind == "rgba":
        def alpha(a):
            a[3] = 255
            a[3, :50] = 0
        path = make_raster(tmp_path / "a.tif", count=4, fill=alpha)
        with rasterio.open(path, "r+") as ds:
            ds.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                              rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha]
    elif kind == "five_bands":
        path = make_raster(tmp_path / "a.tif", count=5, dtype="uint16")
    else:
        path = make_raster(tmp_path / "a.tif", width=50, height=40)  # smaller than one tile: padded
    gdf = predictor.tile_classify(path, ["a", "b"], bands=[4, 3, 2] if kind == "five_bands" else None)
    extent, _ = raster_box(path)
    assert len(gdf) >= 1 and gdf.geometry.within(extent.buffer(1e-6)).all()
    if kind == "five_bands":
        assert gdf.attrs["geoalign"]["bands"] == [4, 3, 2]


def test_no_crs_needs_allow(predictor, tmp_path):
    path = make_raster(tmp_path / "nocrs.tif", crs=None, transform=Affine.identity())
    with pytest.raises(InputError, match="no CRS"):
        predictor.tile_classify(path, ["a"])
    gdf = predictor.tile_classify(path, ["a"], allow_no_crs=True, tile_size=112)
    assert gdf.crs is None and len(gdf) == 6
    x0, y0, x1, y1 = gdf.total_bounds
    assert (x0, y0, x1, y1) == (0, -200, 300, 0)  # pixel coordinates, y = -row (as QGIS shows the raster)


# ---------------------------------------------------------------------------- find / match
def test_find_boxes_ranks_nms_and_text_once(predictor, textured):
    before = predictor.text_batches
    gdf = predictor.find(textured, ["red car", "ship"], min_score=0.0, max_results=7, tile_size=112)
    assert predictor.text_batches - before <= 1  # phrases + background in one text pass, not per tile
    extent, ds = raster_box(textured)
    assert gdf.crs == ds.crs and list(gdf.columns[:3]) == ["phrase", "score", "rank"]
    assert gdf.geometry.within(extent.buffer(1e-6)).all()
    for _, grp in gdf.groupby("phrase"):
        assert len(grp) == 7
        assert sorted(grp["rank"]) == list(range(1, 8))
        assert grp.sort_values("rank")["score"].is_monotonic_decreasing
        b = torch.tensor(np.stack([g.bounds for g in grp.geometry]))
        iou = __import__("torchvision").ops.box_iou(b, b) - torch.eye(len(b), dtype=b.dtype)
        assert iou.max() <= 0.5 + 1e-6  # NMS across tiles
    meta = gdf.attrs["geoalign"]
    assert meta["phrases"] == ["red car", "ship"] and "background" in meta["background_phrases"]
    high = predictor.find(textured, ["red car"], min_score=0.99, tile_size=112)
    assert (high["score"] >= 0.99).all()



def test_find_refinement_moves_boxes_only_to_better_placed_ones(predictor, textured):
    """The 2x look (``_refine_boxes``): a moved box has its centre in the original box, keeps at
    least half its area, and scores at least as high at the tile zoom; ``refine=False`` skips it."""
    from rasterio.windows import Window

    from geoalign_core.geo import RasterSource
    from geoalign_core.inference import refine as R
    from geoalign_core.inference import scoring

    plain = predictor.find(textured, ["red car", "ship"], min_score=0.0, max_results=6, tile_size=112, refine=False)
    assert plain.attrs["geoalign"]["refine"] is False and "n_refined" not in plain.attrs["geoalign"]
    refined = predictor.find(textured, ["red car", "ship"], min_score=0.0, max_results=6, tile_size=112)
    meta = refined.attrs["geoalign"]
    assert meta["refine"] is True and 0 <= meta["n_refined"] <= 2 * (6 + 6)
    assert len(refined) == len(plain) == 12

    texts, _ = predictor.query_texts(["red car", "ship"])
    with RasterSource(textured) as src:
        area = Window(0, 0, src.width, src.height)
        t = src.transform
        px = np.array([[(b[0] - t.c) / t.a, (b[3] - t.f) / t.e, (b[2] - t.c) / t.a, (b[1] - t.f) / t.e]
                       for b in plain.geometry.bounds.values])
        labels = torch.tensor([0 if ph == "red car" else 1 for ph in plain["phrase"]])
        boxes = torch.from_numpy(px)
        live = LiveSource(predictor, src)
        out, n = refine_boxes(predictor, live, area, boxes, labels, texts, 2, 112, 0.25, None)
        assert out.shape == boxes.shape and out.dtype == torch.float64
        moved = np.flatnonzero(np.abs(out.numpy() - px).max(axis=1) > 1e-6)
        assert len(moved) == n and n >= 1  # the random model moves some boxes: the checks below run
        for k in moved:
            (x0, y0, x1, y1), (a0, b0, a1, b1) = px[k], out[k].numpy()
            assert x0 <= (a0 + a1) / 2 <= x1 and y0 <= (b0 + b1) / 2 <= y1
            assert (a1 - a0) * (b1 - b0) >= R.REFINE_MIN_AREA * (x1 - x0) * (y1 - y0) - 1e-6
        if n:
            both = np.concatenate([px[moved], out.numpy()[moved]])
            emb = LiveSource(predictor, src).region_embeddings(both, area, 112, 0.25, None, None)
            pr = scoring.phrase_probabilities(emb, texts, 2, predictor.logit_scale)
            lab = labels[torch.from_numpy(moved)]
            assert (pr[torch.arange(n, 2 * n), lab] >= pr[torch.arange(n), lab] - 1e-6).all()
        empty, n0 = refine_boxes(predictor, live, area, boxes[:0], labels[:0], texts, 2, 112, 0.25, None)
        assert len(empty) == 0 and n0 == 0

def _regions(raster_path, crs_out="EPSG:4326"):
    _, ds = raster_box(raster_path)
    left, bottom, right, top = ds.bounds
    boxes = [
        shapely.box(left + 5, top - 20, left + 15, top - 10),
        shapely.box(left + 60, bottom + 10, left + 140, bottom + 90),  # larger than a 112 px tile? no: 160 px
        shapely.box(left + 100, bottom + 30, left + 103, bottom + 33),
        shapely.box(right + 1000, top + 1000, right + 1010, top + 1010),  # outside
    ]
    gdf = gpd.GeoDataFrame({"name": ["a", "b", "c", "out"], "score": [1, 2, 3, 4]}, geometry=boxes, crs=ds.crs)
    return gdf.to_crs(crs_out)


def test_match_regions_reprojects_and_reports_outside(predictor, textured, tmp_path):
    regions = _regions(textured)
    path = tmp_path / "regions.geojson"
    regions.to_file(path, driver="GeoJSON")
    with pytest.warns(UserWarning, match="1 of 4 features lie outside"):
        gdf = predictor.match_regions(textured, path, ["red car", "tree"], tile_size=112)
    assert len(gdf) == 3 and list(gdf["name"]) == ["a", "b", "c"]
    assert gdf.crs == raster_box(textured)[1].crs
    assert {"best_phrase", "score", "red car", "tree", "score_input"} <= set(gdf.columns)
    assert np.allclose(gdf["score"], gdf[["red car", "tree"]].max(axis=1))
    # the same regions as a GeoDataFrame, and through find --regions
    with pytest.warns(UserWarning):
        found = predictor.find(textured, ["red car"], regions=regions, min_score=0.0, tile_size=112)
    assert len(found) == 3 and sorted(found["rank"]) == [1, 2, 3]


def test_region_embeddings_match_encode_regions(predictor, textured):
    from geoalign_core.geo import RasterSource

    with RasterSource(textured) as src:
        area = Window(0, 0, src.width, src.height)
        boxes = np.array([[10.0, 20.0, 40.0, 50.0], [150.0, 20.0, 290.0, 190.0]])  # in a tile / across tiles
        emb = LiveSource(predictor, src).region_embeddings(boxes, area, 112, 0.25, None, None)
        tile = src.read_tile(rasterio.windows.Window(0, 0, 112, 112))
    x = predictor.model.preprocess(torch.from_numpy(tile.image)[None])
    with torch.no_grad():
        ref = predictor.model.encode_regions(x, [torch.tensor([[10.0, 20.0, 40.0, 50.0]])])[0]
    assert torch.allclose(emb[0], ref, atol=1e-4)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_regions_errors(predictor, textured, tmp_path):
    far = _regions(textured).iloc[[3]]
    with pytest.raises(InputError, match="none of the 1 features overlap"):
        predictor.match_regions(textured, far, ["x"])
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"a": []}, geometry=[], crs=CRS).to_file(empty, driver="GPKG")
    with pytest.raises(InputError, match="no features"):
        predictor.match_regions(textured, empty, ["x"])
    with pytest.raises(InputError, match="empty phrase"):
        predictor.find(textured, ["ok", "  "])


# ---------------------------------------------------------------------------- heatmap
def test_heatmap_grid_nodata_and_metadata(predictor, tmp_path):
    def holes(a):
        a[:, :40, :60] = 0

    path = make_raster(tmp_path / "h.tif", width=250, height=130, nodata=0, fill=holes)
    out = predictor.heatmap(path, "red car", tmp_path / "heat.tif", tile_size=112)
    with rasterio.open(path) as src, rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (src.width, src.height)
        assert ds.transform == src.transform and ds.crs == src.crs
        assert ds.dtypes[0] == "float32" and math.isnan(ds.nodata)
        a = ds.read(1)
        tags = json.loads(ds.tags()["GEOALIGN_METADATA"])
        assert ds.descriptions[0] == "red car"
    assert np.isnan(a[:40, :60]).all() and np.isfinite(a[40:, :]).all() and np.isfinite(a[:, 60:]).all()
    assert np.nanmax(np.abs(a)) <= 1.0 + 1e-5
    assert tags["phrase"] == "red car" and tags["command"] == "heatmap"
    with pytest.raises(InputError, match="already exists"):
        predictor.heatmap(path, "red car", out)
    # coarser grid and a sub-area: transform stays correct
    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
    out2 = predictor.heatmap(path, "red car", tmp_path / "heat2.tif", scale=3,
                             bounds=(left + 20, bottom, right, top - 10))
    with rasterio.open(out2) as ds:
        assert ds.transform.a == pytest.approx(3 * RES) and ds.transform.c == pytest.approx(left + 20)
        assert ds.transform.f == pytest.approx(top - 10)
        assert (ds.width, ds.height) == (math.ceil(210 / 3), math.ceil(110 / 3))


def test_reader_thread_gives_the_same_results_and_forwards_errors(predictor, textured, tmp_path):
    threaded = Predictor(predictor.model, batch_size=3, prefetch=2)
    inline = Predictor(predictor.model, batch_size=3, prefetch=0)
    a = threaded.tile_classify(textured, ["a", "b"], tile_size=64, overlap=0.25)
    b = inline.tile_classify(textured, ["a", "b"], tile_size=64, overlap=0.25)
    assert a.drop(columns="top_k").equals(b.drop(columns="top_k"))
    data = textured.read_bytes()
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="corrupt or truncated"):
        threaded.tile_classify(bad, ["a"], tile_size=64)
    import threading

    assert not [t for t in threading.enumerate() if t.name == "geoalign-batch-reader"]


# ---------------------------------------------------------------------------- cancel / progress
def test_cancel_and_progress(predictor, textured, tmp_path):
    seen = []
    predictor.tile_classify(textured, ["a"], tile_size=64, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (seen[-1][1], seen[-1][1]) and seen[-1][1] == count_tiles(300, 200, 64)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled) as exc:
        predictor.heatmap(textured, "x", tmp_path / "c.tif", tile_size=32, cancel=cancel)
    assert isinstance(exc.value, GeoAlignError)
    assert list(tmp_path.iterdir()) == []


def test_find_object_size_adds_windows_and_keeps_boxes_of_that_size(predictor, textured, tmp_path, capsys):
    """``object_size`` (metres): windows of that size join the candidates, every box's area is within
    SIZE_RANGE x of it, and the size is in the metadata; a bad size is one line, exit 2."""
    from cli_helpers import assert_bad

    from geoalign_core.inference.find import SIZE_RANGE, size_fits, sized_windows

    # small tensors: windows of 8 x 4 input px stepped by a quarter of the size; the area test
    win = sized_windows(torch.tensor([[16.0, 8.0], [float("nan"), float("nan")]]), 2.0, 16)[0]
    assert torch.all(win[:, 2] - win[:, 0] == 8) and torch.all(win[:, 3] - win[:, 1] == 4)
    assert win[:, 0].unique().tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    fits = size_fits(torch.tensor([[0.0, 0, 10, 10], [0, 0, 2, 2]], dtype=torch.float64),
                     torch.tensor([[10.0, 10.0], [float("nan"), float("nan")]], dtype=torch.float64))
    assert fits.tolist() == [[True, True], [False, True]]
    with rasterio.open(textured) as ds:
        px = abs(ds.transform.a)
    side = 12 * px  # 12 px objects
    gdf = predictor.find(textured, ["a field", "a road"], min_score=0.0, max_results=20, object_size=side)
    assert len(gdf) > 0
    area_px = gdf.geometry.area / px**2
    assert (area_px >= 144 / SIZE_RANGE - 1e-6).all() and (area_px <= 144 * SIZE_RANGE + 1e-6).all()
    assert gdf.attrs["geoalign"]["object_sizes_m"] == {"a field": [round(side, 3)] * 2, "a road": [round(side, 3)] * 2}
    exact = ((gdf.geometry.bounds.maxx - gdf.geometry.bounds.minx) / px).round(6)
    assert (exact == 12).any()  # the object-size windows are among the candidates
    for bad in ("0", "a,b", "1,2,3", "-4"):
        assert_bad(capsys, ["find", str(textured), "a field", "--object-size", bad, "--model",
                            predictor.model_source, "--out", str(tmp_path / "m.gpkg")], tmp_path, "--object-size")


def test_background_phrases_leave_out_the_query_up_to_a_plural(predictor):
    """find scores "tree" against the background phrases, but not against "trees" (the same thing)."""
    _, bg = predictor.query_texts(["tree", "A Building"])
    assert "trees" not in bg and "buildings" not in bg
    assert {"roof", "grass", "background"} <= set(bg)
    _, bg = predictor.query_texts(["grass"])
    assert "grass" not in bg and "bare ground" in bg


def test_refinement_is_capped_per_phrase_whatever_max_results(predictor, textured, monkeypatch):
    """The refinement looks at no more than ``REFINE_MAX_BOXES`` boxes per phrase (the
    best), however large ``max_results``; the others stay as found and are still returned."""
    from geoalign_core.inference import find as F

    monkeypatch.setattr(F, "REFINE_MAX_BOXES", 3)
    plain = predictor.find(textured, ["red car", "ship"], min_score=0.0, max_results=1000, tile_size=112,
                           refine=False)
    assert (plain["phrase"].value_counts() > 3).all()  # more boxes than the cap for each phrase
    refined = predictor.find(textured, ["red car", "ship"], min_score=0.0, max_results=1000, tile_size=112)
    meta = refined.attrs["geoalign"]
    assert meta["n_refine_candidates"] == 2 * 3 and meta["refine_max_boxes"] == 3
    assert 0 <= meta["n_refined"] <= meta["n_refine_candidates"]
    # the boxes beyond the cap are kept as found, not dropped
    assert (refined["phrase"].value_counts() > 3).all()


def test_refine_selection_takes_the_best_per_label_up_to_the_cap():
    from geoalign_core.inference.find import refine_selection

    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(100_000, generator=gen)
    labels = torch.randint(0, 3, (100_000,), generator=gen)
    eligible = torch.ones(100_000, dtype=torch.bool)
    eligible[:10] = False
    pick = refine_selection(scores, labels, eligible, 120)
    assert int(pick.sum()) == 3 * 120 and not pick[:10].any()
    for lab in range(3):
        mine = eligible & (labels == lab)
        best = scores[mine].topk(120).values
        assert torch.equal(scores[pick & (labels == lab)].sort(descending=True).values, best)
    few = refine_selection(scores[:50], labels[:50], eligible[:50], 120)
    assert torch.equal(few, eligible[:50])  # fewer than the cap: every eligible box
