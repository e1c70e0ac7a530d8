"""Indexes described in STAC: a STAC Collection, one Item per scene, and the model as an MLM Item.

Every index gets a ``stac/`` description written from its files' metadata (no model needed):

* a single-scene index ``scene.parquet``: ``scene.parquet.stac/``;
* a collection folder ``idx/``: ``idx/stac/``.

In that folder:

``collection.json``
    a STAC 1.1 Collection with the Embeddings extension (``emb:``; geo-embeddings'
    embeddings-stac-specification, v0.0.1): ``emb:type`` ``chip`` (one embedding per tile),
    ``emb:dimensions``, ``data_type``, ``gsd`` (when every scene has the same one),
    ``emb:chip_layout`` (tile size and stride, pixels), a ``rel: emb:model`` link to
    ``model.json`` and ``rel: emb:source-data`` links to the sources (their STAC collections,
    or the rasters).
``items/<scene>.json``
    one Item per indexed scene: its WGS84 footprint, ``processing:datetime`` (when it was
    indexed), ``emb:quantization`` (the int8 patch grid), a ``rel: emb:source-data`` link to
    the source STAC item (or the raster file), the ``embeddings`` asset (the GeoParquet file of
    tile embeddings) and the ``patches`` asset (the int8 patch grid).
``model.json``
    the model as a STAC Item with the Machine Learning Model extension (``mlm:``, v1.4.0).

Links and asset hrefs are relative, so the description moves with the index. The JSON schemas
it is checked against are vendored in ``stac_schemas/`` (:func:`validate`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["EMB_EXT", "MLM_EXT", "PROCESSING_EXT", "stac_dir", "validate", "write_stac"]

STAC_VERSION = "1.1.0"
EMB_EXT = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
MLM_EXT = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
PROCESSING_EXT = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
SCHEMAS = Path(__file__).with_name("stac_schemas")
_VENDORED = {EMB_EXT: "embeddings-v0.0.1.json", MLM_EXT: "mlm-v1.4.0.json", PROCESSING_EXT: "processing-v1.2.0.json"}
PARQUET = "application/vnd.apache.parquet"
NPY = "application/x-npy"


def stac_dir(index: str | os.PathLike) -> Path:
    """Where the STAC description of an index (a .parquet file or a collection folder) goes."""
    p = Path(index)
    return p / "stac" if p.is_dir() else Path(f"{p}.stac")


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()


def _wgs84_footprint(r: dict) -> tuple[dict | None, list[float] | None]:
    """The raster's outline in WGS84 (densified edges), and its bbox; None without a CRS."""
    if not r.get("crs"):
        return None, None
    import pyproj
    import shapely
    from affine import Affine

    t = Affine(*r["transform"][:6])
    w, h = int(r["width"]), int(r["height"])
    n = 16
    edge = ([(w * i / n, 0) for i in range(n)] + [(w, h * i / n) for i in range(n)]
            + [(w * (n - i) / n, h) for i in range(n)] + [(0, h * (n - i) / n) for i in range(n)])
    xs, ys = zip(*[t * p for p in edge])
    tr = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(r["crs"]), "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(xs, ys)
    poly = shapely.Polygon([(round(x, 9), round(y, 9)) for x, y in zip(lon, lat)])
    if not poly.is_valid:
        poly = poly.buffer(0)
    return shapely.geometry.mapping(poly), [round(v, 9) for v in poly.bounds]


def _gsd_m(r: dict) -> float | None:
    """The raster's pixel size in metres (None without a projected CRS in metres, or non-square pixels)."""
    if not r.get("crs"):
        return None
    import pyproj

    crs = pyproj.CRS.from_wkt(r["crs"])
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        return None
    a, b, _, d, e, _ = r["transform"][:6]
    if abs(b) > 1e-12 or abs(d) > 1e-12 or abs(abs(a) - abs(e)) > 1e-9 * abs(a):
        return None
    return round(abs(a), 6)


def _stride(tile_size: int, overlap: float) -> int:
    return max(1, round(tile_size * (1.0 - overlap)))


def _scene_item(name: str, part: Path, patches: Path, stac: dict | None, out: Path) -> tuple[dict, dict, dict]:
    """One scene's Item (written to ``out/items/<name>.json``), and its index's ``emb`` and ``geoalign``
    metadata."""
    from .store import check_patches, read_metadata

    emb, meta = read_metadata(part)
    check_patches(part, emb)
    r, t = meta["raster"], meta["tiling"]
    geometry, bbox = _wgs84_footprint(r)
    created = meta.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    when = (stac or {}).get("datetime") or created  # the imagery's time when STAC says it; else the indexing's
    pe = emb["patch_embeddings"]
    props: dict[str, Any] = {
        "datetime": when,
        "processing:datetime": created,
        "processing:software": {"geoalign": str(meta.get("geoalign_version", ""))},
        "data_type": emb["embedding"]["dtype"],
        "emb:quantization": {
            "method": "linear", "original_dtype": "float32", "quantized_dtype": pe["dtype"],
            "link": {"rel": "describedby", "href": _rel(part, out / "items"),
                     "type": PARQUET,
                     "title": "the patch grid (asset 'patches') is int8 per patch vector: value = q x scale, "
                              "scale in this file's column patch_scale (max|x| / 127, one per patch)"},
        },
        "emb:runtime_parameters": {"tile_size": int(t["tile_size"]), "overlap": float(t["overlap"]),
                                   "stride": _stride(int(t["tile_size"]), float(t["overlap"])),
                                   "bands": list(r["bands"]), "n_tiles": int(meta.get("n_tiles", 0)),
                                   "patch_grid": list(pe["grid"])},
        "emb:fit_for_use": ["retrieval", "similarity_search", "classification"],
    }
    gsd = _gsd_m(r)
    if gsd is not None:
        props["gsd"] = gsd
    source = (stac or {}).get("item") or (stac or {}).get("href") or r["path"]
    src_link = {"rel": "emb:source-data", "href": _source_href(source),
                "type": "application/geo+json" if (stac or {}).get("item") else "image/tiff",
                "title": f"source {'STAC item ' + stac['item_id'] if stac else 'raster'}"}
    links = [src_link,
             {"rel": "collection", "href": "../collection.json", "type": "application/json"},
             {"rel": "parent", "href": "../collection.json", "type": "application/json"},
             {"rel": "root", "href": "../collection.json", "type": "application/json"},
             {"rel": "emb:model", "href": "../model.json", "type": "application/geo+json"}]
    item: dict[str, Any] = {
        "type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": [EMB_EXT, PROCESSING_EXT],
        "id": name, "geometry": geometry, "properties": props, "links": links, "collection": None,
        "assets": {
            "embeddings": {"href": _rel(part, out / "items"), "type": PARQUET, "title": "tile embeddings (GeoParquet)",
                           "roles": ["data", "embeddings"], "data_type": emb["embedding"]["dtype"]},
            "patches": {"href": _rel(patches, out / "items"), "type": NPY,
                        "title": f"patch embeddings, int8 [tiles, {pe['grid'][0]}x{pe['grid'][1]}, "
                                 f"{pe['dim']}] (numpy .npy)",
                        "roles": ["data", "embeddings"], "data_type": pe["dtype"]},
        },
    }
    if bbox is not None:
        item["bbox"] = bbox
    return item, emb, meta


def _source_href(source: str) -> str:
    if source.startswith("/vsicurl/"):
        return source[len("/vsicurl/"):]
    if "://" in source or source.startswith("/vsi"):
        return source
    return Path(source).resolve().as_uri()


def _model_item(meta: dict, emb: dict, when: str) -> dict:
    """The model as an Item with the MLM extension (its weights are the ``model`` asset)."""
    m = meta["model"]
    src = str(m["source"])
    local = Path(src).is_file()
    s, g, d = int(m["input_size"]), list(emb["patch_embeddings"]["grid"]), int(m["embed_dim"])
    bands = ["red", "green", "blue"]
    return {
        "type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": [MLM_EXT],
        "id": _safe_id(m.get("name") or m["arch"]), "geometry": None,
        "properties": {
            "datetime": when,
            "description": f"GeoAlignCLIP image tower ({m['arch']}, dense mode {m['dense_mode']}), fingerprint "
                           f"{m['fingerprint']}: the model that made these embeddings",
            "mlm:name": str(m.get("name") or m["arch"]),
            "mlm:architecture": str(m["arch"]),
            "mlm:tasks": ["similarity-search", "scene-classification"],
            "mlm:framework": "pytorch",
            "mlm:pretrained": True,
            "mlm:input": [{
                "name": "RGB tile", "bands": bands,
                "input": {"shape": [-1, 3, s, s], "dim_order": ["batch", "channel", "height", "width"],
                          "data_type": "float32"},
                "resize_type": "interpolation-linear",
                "description": "a tile of the scene (its bands scaled to 0..1 with the scene's statistics), "
                               "resized to the model's input and normalised with the model's mean and std",
            }],
            "mlm:output": [
                {"name": "tile embedding", "tasks": ["similarity-search"],
                 "result": {"shape": [-1, d], "dim_order": ["batch", "embedding"], "data_type": "float32"},
                 "description": "global ([CLS]) image embedding, L2-normalised, in the joint image-text space"},
                {"name": "patch embeddings", "tasks": ["similarity-search"],
                 "result": {"shape": [-1, d, g[0], g[1]], "dim_order": ["batch", "embedding", "height", "width"],
                            "data_type": "float32"},
                 "description": f"dense per-patch embeddings ({m['dense_mode']}), stored int8"},
            ],
            "geoalign:fingerprint": str(m["fingerprint"]),
        },
        "links": [{"rel": "collection", "href": "./collection.json", "type": "application/json"},
                  {"rel": "root", "href": "./collection.json", "type": "application/json"}],
        "assets": {"model": {
            "href": Path(src).resolve().as_uri() if local else src,
            "title": f"weights: load with geoalign_core.load_model({src!r})",
            "type": "application/octet-stream",
            "roles": ["mlm:model", "mlm:weights"],
            "mlm:artifact_type": "safetensors" if src.endswith(".safetensors") else "torch.save",
        }},
        "collection": None,
    }


def _safe_id(s: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", s) or "model"


def _scenes_of(index: Path) -> tuple[str, list[tuple[str, Path, Path, dict | None]]]:
    """The collection id and its indexed scenes: (name, part, patch file, stac info)."""
    from .scenes import is_collection, manifest_scenes, read_manifest
    from .store import patches_path, read_metadata

    if is_collection(index):
        scenes = manifest_scenes(read_manifest(index))
        return index.resolve().name, [(s.name, s.part(index), s.patches(index), s.stac) for s in scenes
                                      if s.part(index).exists()]
    emb, _ = read_metadata(index)
    stem = index.name[:-len(".parquet")] if index.name.endswith(".parquet") else index.stem
    return stem, [(stem, index, patches_path(index, emb), None)]


def write_stac(index: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write (atomically, file by file) the STAC description of ``index`` (a .parquet scene index or a
    collection folder) into :func:`stac_dir`; returns the collection.json path. Items of scenes no
    longer indexed are removed."""
    from ..outputs import output_lock

    index = Path(index)
    cid, scenes = _scenes_of(index)
    if not scenes:
        raise InputError(f"{index}: no scene is indexed yet, nothing to describe")
    out = stac_dir(index)
    (out / "items").mkdir(parents=True, exist_ok=True)
    with output_lock(out / "collection.json", wait=120.0):
        items, metas = [], []
        for name, part, patches, stac in scenes:
            item, emb, meta = _scene_item(name, part, patches, stac, out)
            item["collection"] = cid
            items.append(item)
            metas.append((emb, meta, stac))
        emb0, meta0, _ = metas[0]
        for _emb, meta, _ in metas[1:]:
            if meta["model"]["fingerprint"] != meta0["model"]["fingerprint"]:
                raise InputError(f"{index}: scenes indexed with different models; cannot describe them as one")
        model = _model_item(meta0, emb0, meta0.get("created") or items[0]["properties"]["processing:datetime"])
        model["collection"] = cid
        coll = _collection(cid, index, items, metas, model, title)
        for item in items:
            _write_json(out / "items" / f"{item['id']}.json", item)
        keep = {f"{it['id']}.json" for it in items}
        for old in (out / "items").glob("*.json"):
            if old.name not in keep:
                old.unlink()
        _write_json(out / "model.json", model)
        _write_json(out / "collection.json", coll)
    return out / "collection.json"


def _collection(cid: str, index: Path, items: list[dict], metas: list, model: dict, title: str | None) -> dict:
    emb0, meta0, _ = metas[0]
    t0 = meta0["tiling"]
    ts, ov = int(t0["tile_size"]), float(t0["overlap"])
    bboxes = [it["bbox"] for it in items if "bbox" in it]
    bbox = ([min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes),
             max(b[3] for b in bboxes)] if bboxes else [-180.0, -90.0, 180.0, 90.0])
    times = sorted(it["properties"]["datetime"] for it in items)
    gsds = {it["properties"].get("gsd") for it in items}
    sources: list[dict] = []
    for (_, _, stac), it in zip(metas, items):
        src = next(lk for lk in it["links"] if lk["rel"] == "emb:source-data")
        coll_link = next((lk for lk in (stac or {}).get("links", []) if lk["rel"] == "collection"), None)
        link = ({"rel": "emb:source-data", "href": coll_link["href"], "type": "application/json",
                 "title": f"source STAC collection {stac.get('collection') or ''}".strip()}
                if coll_link else dict(src))
        if link["href"] not in {s["href"] for s in sources}:
            sources.append(link)
    coll: dict[str, Any] = {
        "type": "Collection", "stac_version": STAC_VERSION, "stac_extensions": [EMB_EXT],
        "id": cid, "title": title or f"GeoAlign index {cid}",
        "description": (f"GeoAlign scene embeddings of {len(items)} scene(s): one {emb0['embedding']['dim']}-d "
                        f"tile embedding per {ts} px tile (overlap {ov:g}), plus each tile's int8 patch grid, "
                        f"made by {meta0['model']['source']} ({meta0['model']['arch']}). Search them with "
                        "`geoalign find --index`."),
        "license": "other",
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[times[0], times[-1]]]}},
        "emb:type": "chip",
        "emb:dimensions": int(emb0["embedding"]["dim"]),
        "data_type": emb0["embedding"]["dtype"],
        "emb:chip_layout": {"layout_type": "regular_grid", "chip_size": [ts, ts],
                            "stride": [_stride(ts, ov), _stride(ts, ov)]},
        "emb:fit_for_use": ["retrieval", "similarity_search", "classification"],
        "links": ([{"rel": "root", "href": "./collection.json", "type": "application/json"},
                   {"rel": "emb:model", "href": "./model.json", "type": "application/geo+json",
                    "title": f"model {model['properties']['mlm:name']} (STAC MLM item)"}]
                  + sources
                  + [{"rel": "item", "href": f"./items/{it['id']}.json", "type": "application/geo+json"}
                     for it in items]),
        "item_assets": {
            "embeddings": {"type": PARQUET, "roles": ["data", "embeddings"], "title": "tile embeddings (GeoParquet)"},
            "patches": {"type": NPY, "roles": ["data", "embeddings"], "title": "int8 patch embeddings"},
        },
    }
    if len(gsds) == 1 and None not in gsds:
        coll["gsd"] = gsds.pop()
    return coll


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- validation
def _store() -> dict[str, dict]:
    """Every schema a STAC document here may refer to, by URI: pystac's copies of the STAC 1.1 core
    schemas (and GeoJSON's) and this package's vendored extension schemas."""
    from pystac.validation.local_validator import get_local_schema_cache

    store = dict(get_local_schema_cache())
    for uri, name in _VENDORED.items():
        store[uri] = json.loads((SCHEMAS / name).read_text())
    return store


def _validator(cls: Any, uri: str, schema: dict, store: dict[str, dict]) -> Any:
    """A validator of ``schema`` (at ``uri``) whose references resolve in ``store`` only (no network):
    through a ``referencing`` registry (jsonschema 4.18 and later), else jsonschema's older RefResolver."""
    try:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT7
    except ImportError:  # jsonschema < 4.18
        import jsonschema

        return cls(schema, resolver=jsonschema.RefResolver(uri, schema, store=store))
    registry: Any = Registry().with_resources(
        (u, Resource.from_contents({"$id": u, **s}, default_specification=DRAFT7)) for u, s in store.items())
    return cls({"$id": uri, **schema}, registry=registry)


def validate(doc: dict, *, extensions: Iterable[str] | None = None) -> list[str]:
    """Check a STAC Item or Collection against the STAC 1.1 core schema and the schema of each
    extension it declares (offline: vendored copies only). Returns the schema URIs it was checked
    against; raises ``jsonschema.ValidationError`` (the best match) when it is not valid, and
    ``ValueError`` for an extension with no vendored schema (unless not in ``extensions``, the
    extensions to check: default, those of :data:`_VENDORED` it declares, others refused)."""
    import jsonschema

    store = _store()
    kind = {"Feature": "item", "Collection": "collection"}.get(str(doc.get("type")))
    if kind is None:
        raise ValueError(f"not a STAC Item or Collection: type {doc.get('type')!r}")
    core = f"https://schemas.stacspec.org/v{STAC_VERSION}/{kind}-spec/json-schema/{kind}.json"
    declared = list(doc.get("stac_extensions", []))
    wanted: Sequence[str] = list(extensions) if extensions is not None else declared
    checked = []
    for uri in [core] + [u for u in declared if u in wanted]:
        if uri not in store:
            raise ValueError(f"no vendored schema for {uri}")
        schema = store[uri]
        cls = jsonschema.validators.validator_for(schema)
        errors = list(_validator(cls, uri, schema, store).iter_errors(doc))
        if errors:
            raise jsonschema.exceptions.best_match(errors)
        checked.append(uri)
    return checked
