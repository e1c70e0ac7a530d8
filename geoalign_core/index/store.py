"""The scene index on disk: one GeoParquet file of tiles and one ``.npy`` file of patch embeddings beside it.

``scene.parquet`` -- a GeoParquet 1.1 file, one row per indexed tile, readable by GeoPandas
(``geopandas.read_parquet``), DuckDB, QGIS or any Parquet reader:

==================  ===================================================================
column              content
==================  ===================================================================
``scene``           string, only in a collection's parts: the scene's name
``id``              int32, the tile's row in this file and in the patch file
``geometry``        the tile's footprint (clipped to the raster), WKB, the raster's CRS
``col_off`` ...     int32 ``col_off``, ``row_off``, ``width``, ``height``: its window in
                    raster pixels (``width`` = ``height`` = the tile size)
``valid_fraction``  float32, share of the tile's pixels that hold data
``valid_mask``      binary or null: the tile's validity at the model's input size (bit-packed,
                    ``numpy.packbits`` of an S x S bool array), null when every pixel is valid
``embedding``       fixed-size list of float32: the tile's global embedding, L2-normalised
``patch_scale``     list of float32, one per patch: patch vector = int8 vector x scale
``patch_norm``      list of float32, one per patch: the L2 norm of that patch vector
==================  ===================================================================

``scene.parquet.patches.npy`` -- the dense patch grid of every tile: int8 ``[tiles, h * w, D]``
(row-major patches, as ``numpy.load(..., mmap_mode="r")`` reads it without loading it). Patch
vectors are stored as the model made them (not normalised; regions are pooled from them with
RoIAlign, then normalised), quantised per vector: ``q = round(127 x / max|x|)``, ``scale =
max|x| / 127``.

File metadata (Parquet key-value): ``geo`` (GeoParquet), ``emb`` (what the embeddings are,
after the Earth Index convention: model, dimension, dtype, quantisation, patch grid) and
``geoalign`` (the raster's identity and fingerprint, the tiling, the build).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyproj
import shapely
import torch

from ..errors import InputError
from ..outputs import exists_error, output_lock, publish

__all__ = [
    "EMB_KEY",
    "FORMAT",
    "FORMAT_VERSION",
    "GEOALIGN_KEY",
    "IndexPart",
    "dequantize",
    "load_patches",
    "patches_path",
    "quantize",
    "read_metadata",
    "unusable",
    "write_index",
]

FORMAT = "geoalign-scene-index"
FORMAT_VERSION = 1
EMB_KEY = "emb"
GEOALIGN_KEY = "geoalign"
PATCHES_SUFFIX = ".patches.npy"
WRITE_WAIT_S = 300.0


def patches_path(index_path: str | os.PathLike, emb: dict | None = None) -> Path:
    """The patch file that belongs to an index file: ``<index>.patches.npy``, or, for a
    collection's part, where its metadata ``emb`` says (``../patches/<scene>.npy``)."""
    name = (emb or {}).get("patch_embeddings", {}).get("file")
    if name and ("/" in name or os.sep in name):  # a collection part: ../patches/<scene>.npy
        return Path(index_path).parent / name
    return Path(f"{index_path}{PATCHES_SUFFIX}")  # beside the index, following it when both are renamed


# ---------------------------------------------------------------------------- quantisation
def quantize(dense: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[B, D, h, w]`` float patch vectors -> int8 ``[B, h*w, D]``, scale and norm ``[B, h*w]``."""
    b, d, h, w = dense.shape
    x = dense.detach().float().permute(0, 2, 3, 1).reshape(b, h * w, d)
    amax = x.abs().amax(dim=-1).clamp_min(1e-12)
    scale = amax / 127.0
    q = torch.round(x / scale[..., None]).clamp_(-127, 127).to(torch.int8)
    norm = x.norm(dim=-1)
    return q.cpu().numpy(), scale.cpu().numpy().astype(np.float32), norm.cpu().numpy().astype(np.float32)


def dequantize(q: np.ndarray | torch.Tensor, scale: np.ndarray | torch.Tensor, grid: tuple[int, int]
               ) -> torch.Tensor:
    """int8 ``[B, h*w, D]`` and scale ``[B, h*w]`` -> float32 patch vectors ``[B, D, h, w]``."""
    q = torch.from_numpy(np.array(q, dtype=np.int8))  # a copy: memory-mapped rows are read-only
    scale = torch.from_numpy(np.array(scale, dtype=np.float32))
    b, n, d = q.shape
    x = q.float() * scale[..., None]
    return x.reshape(b, grid[0], grid[1], d).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------- build parts
@dataclass
class IndexPart:
    """The tiles of one chunk of the build (a resumable unit, saved as one ``.npz``).

    ``ids``: positions of the tiles in the index's window list; ``valid``: bool ``[n, S, S]``;
    ``glob``: float32 ``[n, D]``; ``q``/``scale``/``norm``: see :func:`quantize`.
    """

    ids: np.ndarray
    valid: np.ndarray
    glob: np.ndarray
    q: np.ndarray
    scale: np.ndarray
    norm: np.ndarray

    def save(self, path: Path) -> None:
        """Write the part under a temporary name (this process's own), renamed when complete: a
        failed write (a full disk) leaves nothing, a finished part is always whole."""
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp.npz")
        try:
            np.savez(tmp, ids=self.ids, valid=np.packbits(self.valid, axis=-1), side=self.valid.shape[-1],
                     glob=self.glob, q=self.q, scale=self.scale, norm=self.norm)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: Path) -> IndexPart:
        with np.load(path) as z:
            side = int(z["side"])
            valid = np.unpackbits(z["valid"], axis=-1, count=side).astype(bool)
            return cls(z["ids"], valid, z["glob"], z["q"], z["scale"], z["norm"])


# ---------------------------------------------------------------------------- the files
def _geo_metadata(crs: Any, bbox: list[float]) -> dict:
    column: dict[str, Any] = {"encoding": "WKB", "geometry_types": ["Polygon"], "bbox": bbox}
    column["crs"] = pyproj.CRS.from_wkt(crs.to_wkt()).to_json_dict() if crs is not None else None
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def _digest(path: Path) -> str:
    """A quick check that the patch file is the one written with its index: size + head + tail."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:32]


def write_index(path: Path, parts: list[Path], footprints: list[list[float]], windows: list[Any], crs: Any,
                transform: Any, emb_meta: dict, geoalign_meta: dict, overwrite: bool = False,
                patches: Path | None = None, scene: str | None = None) -> int:
    """Assemble the saved parts into ``path`` and its patch file, atomically; returns the tile count.

    Both files are written under temporary names and renamed at the end (the patch file
    first); a digest of the patch file in the index's metadata ties the two together.
    ``footprints``: per window, its ``[x0, y0, x1, y1]`` in raster pixels clipped to the raster.
    ``patches``: where the patch file goes (default: beside ``path``); ``scene``: a collection's
    scene name, stored in a ``scene`` column.
    """
    from ..geo import pixel_boxes_to_polygons

    counts = []
    for part in parts:  # first pass: sizes only (an npz member is read on access)
        with np.load(part) as z:
            counts.append(len(z["ids"]))
            if counts[-1]:
                hw, d = z["q"].shape[1], z["q"].shape[2]
    n = sum(counts)
    if n == 0:
        raise InputError("nothing to index: no tile has a valid pixel")
    ppath = Path(patches) if patches is not None else patches_path(path)
    ppath.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}.{secrets.token_hex(4)}"
    tmp_p = ppath.with_name(f".{ppath.name}.{token}.tmp.npy")
    tmp_i = path.with_name(f".{path.name}.{token}.tmp")
    try:
        out = np.lib.format.open_memmap(tmp_p, mode="w+", dtype=np.int8, shape=(n, hw, d))
        ids_l, glob_l, scale_l, norm_l, frac_l, masks = [], [], [], [], [], []
        at = 0
        for part, k in zip(parts, counts):  # second pass: one part in memory at a time
            if k == 0:
                continue
            p = IndexPart.load(part)
            out[at:at + k] = p.q
            at += k
            ids_l.append(p.ids)
            glob_l.append(p.glob)
            scale_l.append(p.scale)
            norm_l.append(p.norm)
            frac = p.valid.reshape(k, -1).mean(axis=1).astype(np.float32)
            frac_l.append(frac)
            masks += [None if f >= 1.0 else np.packbits(v).tobytes() for v, f in zip(p.valid, frac)]
            side = p.valid.shape[-1]
        out.flush()
        del out
        ids = np.concatenate(ids_l).astype(np.int32)
        if np.any(np.diff(ids) <= 0):
            raise ValueError("index parts out of order")
        glob = np.concatenate(glob_l).astype(np.float32)
        scale, norm, frac = np.concatenate(scale_l), np.concatenate(norm_l), np.concatenate(frac_l)
        boxes = np.asarray([footprints[i] for i in ids], dtype=np.float64)
        geoms = pixel_boxes_to_polygons(boxes, transform)
        wkb = shapely.to_wkb(np.asarray(geoms, dtype=object))
        bounds = shapely.total_bounds(np.asarray(geoms, dtype=object)).tolist()
        columns = {} if scene is None else {"scene": pa.array([scene] * n, type=pa.string())}
        table = pa.table(columns | {
            "id": pa.array(np.arange(n, dtype=np.int32)),
            "window_id": pa.array(ids),
            "col_off": pa.array(np.asarray([windows[i].col_off for i in ids], dtype=np.int32)),
            "row_off": pa.array(np.asarray([windows[i].row_off for i in ids], dtype=np.int32)),
            "width": pa.array(np.asarray([windows[i].width for i in ids], dtype=np.int32)),
            "height": pa.array(np.asarray([windows[i].height for i in ids], dtype=np.int32)),
            "valid_fraction": pa.array(frac),
            "valid_mask": pa.array(masks, type=pa.binary()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(glob.reshape(-1)), d),
            "patch_scale": pa.FixedSizeListArray.from_arrays(pa.array(scale.reshape(-1)), hw),
            "patch_norm": pa.FixedSizeListArray.from_arrays(pa.array(norm.reshape(-1)), hw),
            "geometry": pa.array(wkb, type=pa.binary()),
        })
        emb = dict(emb_meta)
        emb["patch_embeddings"] = dict(emb.get("patch_embeddings", {}),
                                       file=os.path.relpath(ppath, Path(path).parent), shape=[n, hw, d],
                                       digest=_digest(tmp_p), input_size=side)
        meta = {
            b"geo": json.dumps(_geo_metadata(crs, bounds)).encode(),
            EMB_KEY.encode(): json.dumps(emb).encode(),
            GEOALIGN_KEY.encode(): json.dumps(dict(geoalign_meta, n_tiles=n)).encode(),
        }
        pq.write_table(table.replace_schema_metadata(meta), tmp_i, row_group_size=4096, compression="zstd")
        with output_lock(path, wait=WRITE_WAIT_S):  # held by build_index already: the index and its patches
            if path.exists() and not overwrite:
                raise exists_error(path)
            os.replace(tmp_p, ppath)
            publish(tmp_i, path, overwrite)  # the index last, created only if it does not exist
    finally:
        for t in (tmp_p, tmp_i):
            if t.exists():
                t.unlink()
    return n


def read_metadata(path: str | os.PathLike) -> tuple[dict, dict]:
    """``(emb, geoalign)`` metadata of an index file; InputError when it is not a GeoAlign index."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"index not found: {path}", param="index")
    if path.is_dir():
        raise InputError(f"not an index: {path} is a directory", param="index")
    try:
        kv = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a GeoAlign index (not a Parquet file): {path} ({exc})", param="index") from None
    raw = kv.get(GEOALIGN_KEY.encode())
    emb = kv.get(EMB_KEY.encode())
    if raw is None or emb is None:
        raise InputError(f"not a GeoAlign index (no '{GEOALIGN_KEY}' metadata): {path}", param="index")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise InputError(f"not a GeoAlign index: {path}", param="index")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise InputError(f"{path} is a version {meta.get('version')} index; this GeoAlign reads up to version "
                         f"{FORMAT_VERSION}: update GeoAlign", param="index")
    try:
        emb = json.loads(emb)
    except ValueError:
        raise unusable(path, "its 'emb' metadata is not JSON") from None
    _check_metadata(path, emb, meta)
    return emb, meta


def unusable(path: str | os.PathLike, why: str) -> InputError:
    """The one-line error for an index file that was edited by hand or written by another tool."""
    return InputError(f"not a usable GeoAlign index: {path}: {why}; rebuild it with geoalign index", param="index")


#: metadata every index carries (written by :func:`write_index`), as section -> keys
_REQUIRED = {
    "raster": ("path", "width", "height", "transform", "bands", "scene_stats", "fingerprint"),
    "tiling": ("tile_size", "overlap"),
    "model": ("fingerprint", "embed_dim", "input_size", "source"),
}


def _check_metadata(path: Path, emb: dict, meta: dict) -> None:
    """Refuse metadata that is not what :func:`write_index` writes (missing keys, odd sizes)."""
    for section, keys in _REQUIRED.items():
        part = meta.get(section)
        if not isinstance(part, dict):
            raise unusable(path, f"its metadata has no '{section}'")
        missing = [k for k in keys if k not in part]
        if missing:
            raise unusable(path, f"its '{section}' metadata has no {', '.join(repr(k) for k in missing)}")
    try:
        dim = int(emb["embedding"]["dim"])
        pe = emb["patch_embeddings"]
        pdim, grid = int(pe["dim"]), [int(g) for g in pe["grid"]]
        model_dim = int(meta["model"]["embed_dim"])
    except (KeyError, TypeError, ValueError):
        raise unusable(path, "its 'emb' metadata lacks the embedding sizes") from None
    if not (dim == pdim == model_dim) or len(grid) != 2 or min(grid) < 1:
        raise unusable(path, f"its embedding sizes disagree (tiles {dim}, patches {pdim}, model {model_dim}, "
                             f"grid {grid})")


def load_patches(path: Path, ppath: Path, emb: dict, n_tiles: int) -> np.ndarray:
    """The patch file, memory-mapped, checked against the index: int8 ``[n_tiles, h*w, D]``."""
    try:
        patches = np.load(ppath, mmap_mode="r")  # never allow_pickle: an object array is refused here
    except (ValueError, OSError, EOFError) as exc:
        raise unusable(path, f"its patch file {ppath.name} is not a plain int8 array ({' '.join(str(exc).split())})"
                       ) from None
    pe = emb["patch_embeddings"]
    want = (int(pe["grid"][0]) * int(pe["grid"][1]), int(pe["dim"]))
    if not isinstance(patches, np.ndarray) or patches.dtype != np.int8 or patches.ndim != 3 \
            or tuple(patches.shape[1:]) != want:
        shape = getattr(patches, "shape", "?")
        raise unusable(path, f"its patch file {ppath.name} holds {getattr(patches, 'dtype', '?')} {list(shape)}, "
                             f"not int8 [tiles, {want[0]}, {want[1]}]")
    if patches.shape[0] != n_tiles:
        raise unusable(path, f"the patch file {ppath.name} holds {patches.shape[0]} tiles, the index {n_tiles}")
    return patches


def check_patches(path: Path, emb: dict) -> Path:
    """The index's patch file, checked against what the index says it holds."""
    ppath = patches_path(path, emb)
    info = emb.get("patch_embeddings", {})
    if not ppath.is_file():
        raise InputError(f"the index's patch file is missing: {ppath} (it belongs beside {path.name})",
                         param="index")
    if _digest(ppath) != info.get("digest"):
        raise InputError(f"the patch file {ppath} does not belong to {path} (it was rewritten or the index "
                         "was not completely written): rebuild the index", param="index")
    return ppath
