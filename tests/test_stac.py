"""STAC in and out: ``geoalign index --stac`` from a local catalog of local COGs,
from the same COGs served over HTTP with byte ranges (GDAL /vsicurl/), and from a fake STAC API's
``/search`` on 127.0.0.1; and the STAC description every index gets (Embeddings ``emb:`` Collection
and Items, the model as an MLM Item), validated offline against the vendored schemas.

The model is GeoAlign-Tiny with random weights (``tiny_ckpt``); the COGs are crops of the sample scene.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from cli_helpers import assert_bad, cli
from generate import sample_cog
from stac_helpers import cog_bbox, fake_api, gdal_env_for_local_http, item_dict, serve, write_catalog

from geoalign_core.index.stac_in import asset_raster, stac_scenes
from geoalign_core.index.stac_out import EMB_EXT, MLM_EXT, PROCESSING_EXT, validate

IDS = ("scene-A", "scene B")  # the second is not a safe file name: its scene name gets a hash


@pytest.fixture(scope="module")
def cogs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cogs")
    return {IDS[0]: sample_cog(d / "a.tif", size=224, col=640, row=640),
            IDS[1]: sample_cog(d / "b.tif", size=224, col=200, row=300)}


@pytest.fixture(scope="module")
def catalog(cogs, tmp_path_factory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("catalog"), cogs)


@pytest.fixture(scope="module")
def local_index(catalog, tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stacidx") / "idx"
    with pytest.MonkeyPatch.context() as mp:
        from geoalign_core.cli import main

        mp.setenv("OMP_NUM_THREADS", "1")
        rc = main(["index", "--stac", str(catalog), "--out", str(out), "--model", tiny_ckpt, "--device", "cpu",
                   "--quiet"])
    assert rc == 0
    return out


@pytest.fixture()
def http_env(monkeypatch):
    for k, v in gdal_env_for_local_http().items():
        monkeypatch.setenv(k, v)


def _load(p: Path) -> dict:
    return json.loads(p.read_text())


# ---------------------------------------------------------------------------- STAC in
def test_local_catalog_scenes_are_items_with_links_in_manifest(local_index, catalog, cogs):
    doc = _load(local_index / "manifest.json")
    scenes = {s["stac"]["item_id"]: s for s in doc["scenes"]}
    assert set(scenes) == set(IDS)
    assert scenes["scene-A"]["name"] == "scene-A"  # the item id, unchanged where it is a safe name
    assert scenes["scene B"]["name"].startswith("scene_B-")
    for item_id, s in scenes.items():
        assert s["raster"] == str(cogs[item_id].resolve())
        assert s["stac"]["asset"] == "visual"
        rels = {lk["rel"]: lk["href"] for lk in s["stac"]["links"]}
        assert rels["self"] == s["stac"]["item"] and Path(rels["self"]).is_file()
        assert Path(rels["collection"]).name == "collection.json" and Path(rels["root"]) == catalog
        assert (local_index / s["part"]).is_file()
        assert (local_index / "patches" / f"{s['name']}.npy").is_file()


def test_index_stac_description_validates_and_links(local_index):
    stac = local_index / "stac"
    coll = _load(stac / "collection.json")
    assert validate(coll) == [
        "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json", EMB_EXT]
    assert coll["emb:type"] == "chip" and coll["emb:dimensions"] > 0 and coll["data_type"] == "float32"
    ts = coll["emb:chip_layout"]["chip_size"][0]
    assert coll["emb:chip_layout"]["stride"] == [round(ts * 0.75)] * 2  # default overlap 0.25
    assert coll["gsd"] > 0
    rels = [lk["rel"] for lk in coll["links"]]
    assert rels.count("item") == 2 and "emb:model" in rels
    src = [lk for lk in coll["links"] if lk["rel"] == "emb:source-data"]
    assert len(src) == 1 and src[0]["href"].endswith("aerial/collection.json")  # the source STAC collection
    manifest = {s["name"]: s for s in _load(local_index / "manifest.json")["scenes"]}
    for link in (lk for lk in coll["links"] if lk["rel"] == "item"):
        ipath = (stac / link["href"]).resolve()
        item = _load(ipath)
        assert EMB_EXT in validate(item) and PROCESSING_EXT in validate(item)
        p = item["properties"]
        q = p["emb:quantization"]
        assert (q["original_dtype"], q["quantized_dtype"]) == ("float32", "int8")
        assert p["processing:datetime"] and p["datetime"].startswith("2024-05-0")  # the source item's time
        source = [lk for lk in item["links"] if lk["rel"] == "emb:source-data"]
        assert [lk["href"] for lk in source] == [Path(manifest[item["id"]]["stac"]["item"]).as_uri()]
        emb = (ipath.parent / item["assets"]["embeddings"]["href"]).resolve()
        assert emb == (local_index / manifest[item["id"]]["part"]).resolve()
        patches = np.load(ipath.parent / item["assets"]["patches"]["href"], mmap_mode="r")
        assert patches.dtype == np.int8 and patches.shape[-1] == coll["emb:dimensions"]
        lon0, lat0, lon1, lat1 = item["bbox"]
        assert 14 < lon0 < lon1 < 16 and 44 < lat0 < lat1 < 46  # EPSG:32633 near 15E 45N
    model = _load(stac / "model.json")
    assert MLM_EXT in validate(model)
    assert model["properties"]["mlm:output"][0]["result"]["shape"][-1] == coll["emb:dimensions"]
    assert model["assets"]["model"]["roles"][0] == "mlm:model"


def test_http_cogs_are_range_read_and_index_like_local_files(local_index, cogs, tiny_ckpt, tmp_path, capsys,
                                                             http_env):
    with serve(next(iter(cogs.values())).parent) as srv:
        cat = write_catalog(tmp_path / "cat", cogs, base=srv.url)
        scenes = stac_scenes(str(cat))
        assert [s.raster for s in scenes] == [f"/vsicurl/{srv.url}/a.tif", f"/vsicurl/{srv.url}/b.tif"]
        rc, out, err = cli(capsys, "index", "--stac", cat, "--out", tmp_path / "idx", "--model", tiny_ckpt,
                           "--device", "cpu", "--quiet")
        assert rc == 0, err
        hits, ranged = dict(srv.hits), dict(srv.ranged)
    for name in ("/a.tif", "/b.tif"):
        assert ranged.get(name, 0) >= 1 and ranged[name] == hits[name], (hits, ranged)  # every GET a range
    manifest = {s["name"]: s for s in _load(local_index / "manifest.json")["scenes"]}
    for s in _load(tmp_path / "idx" / "manifest.json")["scenes"]:
        assert s["raster"].startswith("/vsicurl/http://127.0.0.1:")
        a = np.load(tmp_path / "idx" / "patches" / f"{s['name']}.npy")
        b = np.load(local_index / "patches" / f"{s['name']}.npy")
        assert np.array_equal(a, b), s["name"]  # remote COG == local COG, byte for byte
        assert manifest[s["name"]]["pixels"] == s["pixels"]
    item = _load(tmp_path / "idx" / "stac" / "items" / "scene-A.json")
    validate(item)


def test_stac_api_search_filters_by_collection_bbox_datetime(cogs, tiny_ckpt, tmp_path, capsys, http_env):
    from datetime import datetime, timezone

    box_a = cog_bbox(cogs["scene-A"])
    box_b = cog_bbox(cogs["scene B"])
    far = [box_a[0] + 1, box_a[1] + 1, box_a[2] + 1, box_a[3] + 1]
    holder = {}
    items = [item_dict("scene-A", "", box_a, datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
             item_dict("scene B", "", box_b, datetime(2024, 6, 1, 10, tzinfo=timezone.utc)),
             item_dict("elsewhere", "", far, datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
             item_dict("other-coll", "", box_a, datetime(2024, 5, 1, 10, tzinfo=timezone.utc), collection="other")]
    with serve(cogs["scene-A"].parent, fake_api(items, lambda: holder["url"])) as srv:
        holder["url"] = srv.url
        for it, f in zip(items, ("a.tif", "b.tif", "a.tif", "a.tif")):
            it["assets"]["visual"]["href"] = f"{srv.url}/{f}"
            it["links"] = [{"rel": "self", "href": f"{srv.url}/items/{it['id']}", "type": "application/geo+json"}]
        box = ",".join(str(v) for v in [min(box_a[0], box_b[0]), min(box_a[1], box_b[1]),
                                        max(box_a[2], box_b[2]), max(box_a[3], box_b[3])])
        scenes = stac_scenes(srv.url, collections=["aerial"], bbox=[float(v) for v in box.split(",")])
        assert [s.stac["item_id"] for s in scenes] == ["scene-A", "scene B"]  # not elsewhere, not other-coll
        rc, out, err = cli(capsys, "index", "--stac", srv.url, "--collection", "aerial", "--bbox", box,
                           "--datetime", "2024-05-01/2024-05-31", "--asset", "visual", "--out", tmp_path / "idx",
                           "--model", tiny_ckpt, "--device", "cpu", "--quiet")
        assert rc == 0, err
        searched = list(srv.searches)
    assert any(q.get("collections") in (["aerial"], "aerial") for q in searched), searched
    doc = _load(tmp_path / "idx" / "manifest.json")
    assert [s["name"] for s in doc["scenes"]] == ["scene-A"]  # June's scene B is outside --datetime
    assert doc["scenes"][0]["stac"]["item"].endswith("/items/scene-A")
    item = _load(tmp_path / "idx" / "stac" / "items" / "scene-A.json")
    validate(item)
    assert [lk["href"] for lk in item["links"] if lk["rel"] == "emb:source-data"] == [
        doc["scenes"][0]["stac"]["item"]]


def test_single_scene_index_gets_a_stac_description(cogs, tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "one.parquet"
    rc, _, err = cli(capsys, "index", cogs["scene-A"], "--out", out, "--model", tiny_ckpt, "--device", "cpu",
                     "--quiet")
    assert rc == 0, err
    stac = tmp_path / "one.parquet.stac"
    coll = _load(stac / "collection.json")
    validate(coll)
    item = _load(stac / "items" / "one.json")
    validate(item)
    src = [lk["href"] for lk in item["links"] if lk["rel"] == "emb:source-data"]
    assert src == [cogs["scene-A"].resolve().as_uri()]
    import rasterio

    with rasterio.open(cogs["scene-A"]) as ds:
        assert item["properties"]["gsd"] == pytest.approx(ds.res[0])
    assert (stac / "items" / item["assets"]["embeddings"]["href"]).resolve() == out.resolve()


def test_bad_stac_inputs_are_one_line_errors(catalog, cogs, tiny_ckpt, tmp_path, capsys):
    base = ["index", "--out", tmp_path / "idx", "--model", tiny_ckpt, "--device", "cpu", "--quiet"]
    assert_bad(capsys, base + ["--stac", tmp_path / "nope.json"], tmp_path, "no STAC file")
    assert_bad(capsys, base + ["--stac", catalog, "--asset", "nir"], tmp_path, "has no asset 'nir'")
    assert_bad(capsys, base + ["--stac", catalog, "--bbox", "1,2,3"], tmp_path, "--bbox must be")
    assert_bad(capsys, base + [cogs["scene-A"], "--collection", "x"], tmp_path, "are for --stac")
    assert_bad(capsys, base + ["--stac", catalog, "--collection", "x"], tmp_path, "filter a STAC API search")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_bad(capsys, base + ["--stac", bad], tmp_path, "not a STAC file")
    holder = {}
    with serve(tmp_path, fake_api([], lambda: holder["url"])) as srv:
        holder["url"] = srv.url
        assert_bad(capsys, base + ["--stac", srv.url, "--collection", "aerial"], tmp_path, "no STAC item")
    from generate import free_port

    assert_bad(capsys, base + ["--stac", f"http://127.0.0.1:{free_port()}/api"], tmp_path, "STAC API search at")


def test_asset_hrefs_to_gdal_paths(tmp_path):
    assert asset_raster("https://x.org/a.tif") == "/vsicurl/https://x.org/a.tif"
    assert asset_raster("s3://bucket/k/a.tif") == "/vsis3/bucket/k/a.tif"
    assert asset_raster("gs://bucket/a.tif") == "/vsigs/bucket/a.tif"
    assert asset_raster((tmp_path / "a b.tif").as_uri()) == str(tmp_path / "a b.tif")
    assert asset_raster("/vsizip/x.zip/a.tif") == "/vsizip/x.zip/a.tif"


# ---------------------------------------------------------------------------- the vendored schemas bite
@pytest.mark.parametrize("what", [
    "no emb:dimensions", "unknown emb field", "chip_size of 3", "no emb:model link", "emb field on asset",
    "quantization without original_dtype", "item emb:type", "no embeddings asset", "bad processing datetime",
    "core: item without geometry", "mlm: no model asset", "mlm: unknown task", "mlm: output without result",
])
def test_vendored_schemas_reject_broken_documents(local_index, what):
    stac = local_index / "stac"
    coll, model = _load(stac / "collection.json"), _load(stac / "model.json")
    item = _load(stac / "items" / "scene-A.json")
    doc = copy.deepcopy({"no emb:dimensions": coll, "unknown emb field": coll, "chip_size of 3": coll,
                         "no emb:model link": coll, "emb field on asset": item}.get(what, item))
    if what.startswith("mlm"):
        doc = copy.deepcopy(model)
    p = doc.get("properties", {})
    if what == "no emb:dimensions":
        del doc["emb:dimensions"]
    elif what == "unknown emb field":
        doc["emb:colour"] = "red"
    elif what == "chip_size of 3":
        doc["emb:chip_layout"]["chip_size"] = [1, 2, 3]
    elif what == "no emb:model link":
        doc["links"] = [lk for lk in doc["links"] if lk["rel"] != "emb:model"]
    elif what == "emb field on asset":
        doc["assets"]["embeddings"]["emb:dimensions"] = 3
    elif what == "quantization without original_dtype":
        del p["emb:quantization"]["original_dtype"]
    elif what == "item emb:type":
        p["emb:type"] = "chip"  # a collection-level field
    elif what == "no embeddings asset":
        doc["assets"]["tiles"] = doc["assets"].pop("embeddings")
    elif what == "bad processing datetime":
        p["processing:datetime"] = "yesterday"
    elif what == "core: item without geometry":
        del doc["geometry"]
    elif what == "mlm: no model asset":
        doc["assets"]["model"]["roles"] = ["data"]
    elif what == "mlm: unknown task":
        p["mlm:tasks"] = ["telepathy"]
    elif what == "mlm: output without result":
        del p["mlm:output"][0]["result"]
    validate(copy.deepcopy({"no emb:dimensions": coll, "unknown emb field": coll, "chip_size of 3": coll,
                            "no emb:model link": coll}.get(what, model if what.startswith("mlm") else item)))
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_validate_refuses_an_extension_it_has_no_schema_for(local_index):
    item = _load(local_index / "stac" / "items" / "scene-A.json")
    item["stac_extensions"].append("https://stac-extensions.github.io/eo/v1.1.0/schema.json")
    with pytest.raises(ValueError, match="no vendored schema"):
        validate(item)
