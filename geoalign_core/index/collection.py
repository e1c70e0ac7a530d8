"""A collection index opened for queries: ``find`` and ``tile-classify`` over every scene as one.

:class:`SceneCollection` holds one :class:`~.scene_index.SceneIndex` per indexed scene (opened
on first use) and one text model for all of them. A query runs on each scene's index, then the
results are merged into one table in one CRS with a ``scene`` column:

* ``find``: the best ``max_results`` boxes per phrase over all scenes. Scenes are visited in
  the order of their best patch (the exact scan: every stored patch against the phrases, as
  one scene's ``find`` does it) and each later scene is asked only for boxes above the
  ``max_results``-th best found so far, so scenes that cannot contribute cost one matrix
  product each. Past :data:`~.ann.ANN_MIN_PATCHES` stored patches, and when the collection has
  an ANN index (:mod:`.ann`), the approximate search names the tiles to score instead of the
  exact scan of every patch. Boxes are not merged across scenes (overlapping scenes may each
  report the same object).
* ``tile_classify``: every tile of every scene.

The output CRS is ``crs`` when given, else the scenes' CRS when they share one, else EPSG:4326.
``heatmap``, ``similar`` and ``match_regions`` take one scene: open its part
(``idx/parts/<scene>.parquet``) as a :class:`~.scene_index.SceneIndex`.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
from pyproj import CRS
from rasterio.crs import CRS as RasterCRS
from rasterio.windows import Window

from ..defaults import DEFAULT_BATCH_SIZE, DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE, DEFAULT_OVERLAP
from ..errors import IndexMismatch, InputError
from ..geo.vectors import parse_crs
from ..inference import scoring
from ..inference.encoder import Encoder
from ..inference.metadata import run_metadata
from . import ann
from .scene_index import SceneIndex
from .scenes import Scene, manifest_scenes, read_manifest
from .store import read_metadata
from .text_side import TextSide

__all__ = ["MAX_OPEN", "SceneCollection"]

#: scene indexes kept open at once (each holds its tiles' table in memory: ~3.6 KB per tile for
#: ViT-B/16, ~80 MB for 100 km² at 0.3 m); older ones are closed and reopened when needed
MAX_OPEN = 32


class SceneCollection(TextSide):
    """A collection index folder (``geoalign index A.tif B.tif ... --out idx/``), opened for queries.

    ::

        idx = open_index("idx/")                        # a folder opens as a SceneCollection
        matches = idx.find(["swimming pool"], crs="EPSG:4326")   # a 'scene' column says where
    """

    live = False

    def __init__(self, root: Path, doc: dict, check_raster: bool, device: str, batch_size: int) -> None:
        self.root = root
        self.doc = doc
        self.settings = doc["settings"]
        listed = manifest_scenes(doc)
        self.scenes: list[Scene] = [s for s in listed if s.part(root).exists()]
        self.missing: list[Scene] = [s for s in listed if not s.part(root).exists()]
        if not self.scenes:
            raise InputError(f"{root} holds no indexed scene yet ({len(listed)} listed): run geoalign index first",
                             param="index")
        self._check_raster = check_raster
        self._device, self._batch_size = device, batch_size
        self._metadata: dict[str, tuple[dict, dict]] = {}
        self._ann_cache: tuple | None = None  # (ann.json version, AnnIndex, current): see ann.choose
        self._open: OrderedDict[str, Any] = OrderedDict()  # the parts opened last (at most MAX_OPEN)
        self._enc: Encoder | None = None
        self.path = root

    @classmethod
    def open(cls, path: str | PathLike, model: Any = None, *, device: str = "auto",
             batch_size: int = DEFAULT_BATCH_SIZE,
             check_raster: bool = True) -> SceneCollection:
        """Open a collection folder; see :meth:`SceneIndex.open <.scene_index.SceneIndex.open>`
        for ``model`` and ``check_raster`` (checked per scene when it is first opened)."""
        root = Path(path)
        coll = cls(root, read_manifest(root), check_raster, device, batch_size)
        if coll.missing:
            names = ", ".join(s.name for s in coll.missing[:5]) + (" ..." if len(coll.missing) > 5 else "")
            warnings.warn(f"{root}: {len(coll.missing)} of {len(coll.missing) + len(coll.scenes)} scenes are not "
                          f"indexed (failed, or still running): {names}; searching the others", UserWarning,
                          stacklevel=2)
        if model is not None:
            coll.bind(model)
        return coll

    # ------------------------------------------------------------------ model and parts
    def own_model(self) -> str:
        return str(self.settings["model"])

    def check_compatible(self, enc: Encoder, bands: Any = None) -> None:
        """Refuse a model other than the collection's (each scene checks its bands when it is opened)."""
        fp = enc.model.fingerprint()
        if fp != self.settings["model_fingerprint"]:
            raise IndexMismatch(f"{self.root.name} was built with the model {self.settings['model']!r} (fingerprint "
                                f"{self.settings['model_fingerprint']}); this is {enc.model_source!r} (fingerprint "
                                f"{fp}): query it with its own model", param="model")

    def check_raster(self, raster: Any = None) -> None:
        """A collection answers for its own scenes (each checks its raster when it is opened): no raster to check."""
        if raster is not None:
            raise InputError("a collection index answers for its own scenes: leave the raster out", param="raster")

    def bind(self, model: Any) -> Encoder:
        """Use ``model`` for the text side of every scene (:meth:`TextSide.bind <.text_side.TextSide.bind>`)."""
        enc = super().bind(model)
        for idx in self._open.values():
            idx.bind(enc)
        return enc

    def part(self, scene: Scene | str):
        """The :class:`~.scene_index.SceneIndex` of one scene (opened once)."""
        name = scene if isinstance(scene, str) else scene.name
        if name in self._open:
            self._open.move_to_end(name)
            return self._open[name]
        match = [s for s in self.scenes if s.name == name]
        if not match:
            raise InputError(f"no indexed scene {name!r} in {self.root}", param="scene")
        self._open[name] = SceneIndex.open(match[0].part(self.root), self.encoder, check_raster=self._check_raster)
        while len(self._open) > MAX_OPEN:
            self._open.popitem(last=False)
        return self._open[name]

    def __len__(self) -> int:
        return len(self.scenes)

    def part_metadata(self, scene: Scene) -> tuple[dict, dict]:
        """``(emb, geoalign)`` metadata of a scene's part, read once (nothing else of it is loaded)."""
        if scene.name not in self._metadata:
            self._metadata[scene.name] = read_metadata(scene.part(self.root))
        return self._metadata[scene.name]

    def n_patches(self) -> int:
        """Stored patch vectors over all indexed scenes (from the parts' metadata, nothing loaded)."""
        if getattr(self, "_n_patches", None) is None:
            total = 0
            for s in self.scenes:
                emb, _ = self.part_metadata(s)
                shape = emb["patch_embeddings"]["shape"]
                total += int(shape[0]) * int(shape[1])
            self._n_patches = total
        return self._n_patches

    def output_crs(self, crs: Any = None):
        """``crs`` when given; else the scenes' common CRS; else EPSG:4326."""
        if crs is not None:
            return parse_crs(crs)
        crss = {self._crs(s) for s in self.scenes}
        if len(crss) == 1 and None not in crss:
            return CRS.from_user_input(next(iter(crss)).to_wkt())
        return CRS.from_epsg(4326)

    def _crs(self, scene: Scene):
        """A scene's CRS from its part's metadata (without opening the part)."""
        wkt = self.part_metadata(scene)[1]["raster"].get("crs")
        return RasterCRS.from_wkt(wkt) if wkt else None

    # ------------------------------------------------------------------ queries
    def find(self, phrases: Sequence[str] | str, regions: Any = None, min_score: float | None = None,
             max_results: int | None = None, *, crs: Any = None, exact: bool | None = None, **kwargs: Any):
        """The best boxes per phrase over all scenes (see the module docstring); rows as
        :meth:`SceneIndex.find <.scene_index.SceneIndex.find>` plus ``scene``.

        ``exact``: True scans every stored patch; False uses the collection's ANN index (an
        error without one); None (default) uses it when present and the collection has at
        least :data:`~.ann.ANN_MIN_PATCHES` patches.
        """
        if regions is not None:
            raise InputError("--regions takes one scene: query its part (idx/parts/<scene>.parquet)",
                             param="regions")
        if kwargs.get("bounds") is not None:
            raise InputError("bounds are for one scene: query its part (idx/parts/<scene>.parquet)", param="bounds")
        enc = self.encoder
        phrases = enc.clean(phrases)
        min_score = DEFAULT_MIN_SCORE if min_score is None else float(min_score)
        max_results = DEFAULT_MAX_RESULTS if max_results is None else int(max_results)
        out_crs = self.output_crs(crs)
        ann_index = ann.choose(self, exact)
        use_ann = ann_index is not None
        narrowed = ann.candidate_tiles(ann_index, enc, phrases, max_results) if ann_index is not None else None
        order = self._scene_order(phrases, narrowed)
        found: list[pd.DataFrame] = []
        floors = np.full(len(phrases), min_score)
        visited = 0
        for scene, best in order:
            if best < floors.min():
                break  # no later scene has a patch that can reach any phrase's max_results-th box
            idx = self.part(scene)
            visited += 1
            with idx.restricted(None if narrowed is None else narrowed.get(scene.name, np.zeros(0, np.int64))):
                gdf = idx.find(phrases, None, float(floors.min()), max_results, **kwargs)
            if len(gdf) == 0:
                continue
            gdf = _as_scene_rows(gdf, scene.name, out_crs)
            found.append(gdf)
            floors = _floors(pd.concat(found), phrases, max_results, min_score)
        out = self._merge(found, phrases, max_results, out_crs, _value_column(enc))
        out.attrs["geoalign"] = self._meta(enc, "find", phrases=phrases, min_score=min_score,
                                           max_results=max_results, n_scenes_scored=visited,
                                           search="ann" if use_ann else "exact", crs=out_crs.to_string(),
                                           n_matches=len(out))
        return out

    def _scene_order(self, phrases: list[str], narrowed: dict[str, np.ndarray] | None) -> list[tuple[Scene, float]]:
        """Scenes with the best score bound of any of their tiles, best first (exact: every
        patch of every scene; with ANN: the tiles it named)."""
        enc = self.encoder
        texts, _ = enc.query_texts(phrases)
        ranked = []
        for s in self.scenes:
            idx = self.part(s)
            rows = np.arange(len(idx)) if narrowed is None else narrowed.get(s.name, np.zeros(0, np.int64))
            if len(rows) == 0:
                continue
            best = idx.patch_scores(rows, texts, len(phrases), enc.logit_scale)
            bound = scoring.score_bound(best, probability=True).amax(dim=0)  # [N] raw
            # in the scene's calibrated scores, which find reports and the floors are in
            whole = Window(0, 0, idx.width, idx.height)
            cal = idx.calibration(whole, idx.tile_size(None), idx.overlap(None, DEFAULT_OVERLAP), texts, len(phrases))
            ranked.append((s, float(cal.score(bound, torch.arange(len(phrases))).max())))
        ranked.sort(key=lambda t: -t[1])
        return ranked

    def _merge(self, found: list[pd.DataFrame], phrases: list[str], max_results: int, crs: Any,
               column: str = "score"):
        if not found:
            return gpd.GeoDataFrame({"scene": pd.Series([], dtype=object), "phrase": pd.Series([], dtype=object),
                                     column: pd.Series([], dtype=float), "rank": pd.Series([], dtype="int64")},
                                    geometry=gpd.GeoSeries([], crs=crs), crs=crs)
        allf = pd.concat(found, ignore_index=True)
        allf["_p"] = allf["phrase"].map({p: i for i, p in enumerate(phrases)})
        allf = allf.sort_values(["_p", column], ascending=[True, False], kind="stable")
        allf = allf.groupby("_p", sort=True).head(max_results).copy()
        allf["rank"] = allf.groupby("_p").cumcount() + 1
        allf = allf.drop(columns="_p").reset_index(drop=True)
        return gpd.GeoDataFrame(allf, geometry="geometry", crs=crs)

    def tile_classify(self, classes: Sequence[str] | None = None, top_k: int = 3, *, crs: Any = None,
                      **kwargs: Any):
        """Every tile of every scene classified (rows as :meth:`SceneIndex.tile_classify
        <.scene_index.SceneIndex.tile_classify>` plus ``scene``)."""
        if kwargs.get("bounds") is not None:
            raise InputError("bounds are for one scene: query its part (idx/parts/<scene>.parquet)", param="bounds")
        out_crs = self.output_crs(crs)
        parts = []
        for s in self.scenes:
            gdf = self.part(s).tile_classify(classes, top_k, **kwargs)
            gdf = _as_scene_rows(gdf, s.name, out_crs)
            parts.append(gdf)
        out = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=out_crs)
        first = parts[0].attrs.get("geoalign", {})
        out.attrs["geoalign"] = self._meta(self.encoder, "tile-classify", classes=first.get("classes"), top_k=top_k,
                                           crs=out_crs.to_string(), n_tiles=len(out))
        return out

    def _refuse(self, what: str) -> None:
        raise InputError(f"{what} takes one scene: give its part, e.g. --index "
                         f"{self.scenes[0].part(self.root)}", param="index")

    def heatmap(self, *args: Any, **kwargs: Any):
        self._refuse("heatmap")

    def similar(self, *args: Any, **kwargs: Any):
        self._refuse("similar")

    def match_regions(self, *args: Any, **kwargs: Any):
        self._refuse("match-regions")

    def _meta(self, enc: Encoder, command: str, **params: Any) -> dict:
        return run_metadata(enc, command, index=str(self.root), scenes=[s.name for s in self.scenes],
                            n_scenes=len(self.scenes), n_scenes_missing=len(self.missing),
                            tile_size=self.settings["tile_size"], overlap=self.settings["overlap"], **params)

    def info(self) -> dict:
        return {"index": str(self.root), "scenes": [s.name for s in self.scenes],
                "missing": [s.name for s in self.missing], "model": self.settings["model"],
                "model_fingerprint": self.settings["model_fingerprint"], "tile_size": self.settings["tile_size"],
                "overlap": self.settings["overlap"]}


def _as_scene_rows(gdf: Any, name: str, crs: Any) -> Any:
    """One scene's result in the collection's CRS, with its ``scene`` column first."""
    gdf = gdf.to_crs(crs) if gdf.crs is not None else gdf.set_crs(crs, allow_override=True)
    gdf.insert(0, "scene", name)
    return gdf


def _value_column(enc: Any) -> str:
    """``score`` for a calibrated model, else ``standout`` (what ``find`` writes)."""
    return "score" if enc.score_map("find") is not None else "standout"


def _floors(found: pd.DataFrame, phrases: list[str], k: int, min_score: float) -> np.ndarray:
    """Per phrase, the score a new box must beat to enter the top ``k`` (``min_score`` until k are found); an
    uncalibrated model's ``standout`` is compared as ``find``'s ``min_score`` reads it, ``sigmoid(standout - 2)``."""
    out = np.full(len(phrases), float(min_score))
    col = "score" if "score" in found.columns else "standout"
    for i, p in enumerate(phrases):
        s = np.sort(found.loc[found["phrase"] == p, col].to_numpy())[::-1]
        if col == "standout":
            s = 1.0 / (1.0 + np.exp(-(s - 2.0)))
        if len(s) >= k:
            out[i] = max(out[i], float(s[k - 1]))
    return out
