"""Indexing many scenes into a collection folder, shared between processes (torchrun or a job array).

:func:`build_collection` indexes this process's share of the scenes (:func:`.scenes.share`),
one scene index per scene (:func:`.build.build_index`, each resumable and written
atomically), and never stops for one scene that fails: the failure is recorded, the next scene
goes on, and the result lists what failed. A rerun of the same command skips every finished
scene, redoes a broken or outdated one (a missing or foreign patch file, another model, a
raster that changed) and resumes an interrupted one from its finished chunks.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank takes its share and its own GPU
(``LOCAL_RANK``); the ranks meet once at the end (a gloo process group, CPU only) so that rank 0
can print one summary of all of them and every rank exits with the same code. Without torchrun,
``shard=(i, N)`` takes share ``i`` of ``N`` (Slurm / Kubernetes job arrays): each task reports
its own share.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from ..errors import Cancelled, GeoAlignError, InputError
from ..geo.gdal_errors import gdal_message
from ..inference.encoder import Cancel, Encoder, Progress, Stage
from ..outputs import OutputBusy, output_lock
from .scenes import Scene, check_collection_root, expand_inputs, scene_names, share, write_manifest

__all__ = ["CollectionBuild", "SceneOutcome", "build_collection", "dist_env", "plan_scenes"]

Say = Callable[[str], None]


@dataclass
class SceneOutcome:
    """What happened to one scene: ``status`` is ``indexed``, ``skipped`` (already done) or ``failed``."""

    name: str
    raster: str
    status: str
    tiles: int = 0
    pixels: int = 0
    seconds: float = 0.0
    error: str = ""
    rank: int = 0


@dataclass
class CollectionBuild:
    """The outcome of :func:`build_collection` (of every rank, on rank 0 under torchrun)."""

    root: Path
    outcomes: list[SceneOutcome] = field(default_factory=list)
    n_scenes: int = 0
    seconds: float = 0.0
    world: int = 1
    scope: str = "in this run"  # whose scenes the outcomes are: this run, a shard, all ranks

    @property
    def failed(self) -> list[SceneOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def summary(self) -> str:
        n = {s: sum(o.status == s for o in self.outcomes) for s in ("indexed", "skipped", "failed")}
        tiles = sum(o.tiles for o in self.outcomes if o.status == "indexed")
        secs = sum(o.seconds for o in self.outcomes if o.status == "indexed")
        rate = f", {tiles / secs:.1f} tiles/s per process" if secs > 0 and tiles else ""
        head = (f"{self.root}: {n['indexed']} scene(s) indexed ({tiles} tiles{rate}), {n['skipped']} already "
                f"done, {n['failed']} failed; {len(self.outcomes)} scene(s) {self.scope}, {self.n_scenes} in the "
                f"collection; {self.seconds:.1f} s")
        lines = [head] + [f"  failed: {o.name} ({o.raster}): {o.error}" for o in self.failed]
        return "\n".join(lines)


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: bool = False  # a process group was started here (and is destroyed at the end)


def dist_env() -> DistEnv:
    """torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); a gloo process group
    when there are several ranks (used once, to gather the outcomes)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world <= 1:
        return DistEnv()
    import torch.distributed as dist

    if dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), local, False)
    # indexing one share can take hours: the final meeting must not time out
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(days=7))
    return DistEnv(rank, world, local, True)


def engine_device(device: str, env: DistEnv) -> str:
    """This rank's device: with CUDA and several ranks, GPU ``LOCAL_RANK`` (modulo the GPUs)."""
    import torch

    if env.world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{env.local_rank % torch.cuda.device_count()}"
    return device


def plan_scenes(rasters: Sequence[str], from_list: str | PathLike | None = None,
                scenes: Sequence[Scene] | None = None) -> list[Scene]:
    """The collection's scenes, named, with their pixel counts (0 for one that does not open:
    it fails, and is reported, when its turn comes). ``scenes``: scenes named already (from
    STAC items, :mod:`.stac_in`), indexed before the ``rasters``."""
    import rasterio

    paths = expand_inputs(rasters, from_list) if rasters or from_list is not None else []
    planned = list(scenes or []) + [Scene(n, p) for n, p in zip(scene_names(paths), paths)]
    names = [s.name.lower() for s in planned]
    dup = next((s.name for s in planned if names.count(s.name.lower()) > 1), None)
    if dup is not None:
        raise InputError(f"two scenes are named {dup!r} (a STAC item id and a raster's file name): index them "
                         "into separate collections", param="rasters")
    for scene in planned:
        try:
            with rasterio.open(scene.raster) as ds:
                scene.pixels = int(ds.width) * int(ds.height)
        except Exception:  # noqa: BLE001 -- reported with its reason when it is indexed
            scene.pixels = 0
    return planned


def _settings(enc: Encoder, tile_size: int | None, overlap: float, bands: Sequence[int] | str | None) -> dict:
    return {"model": str(enc.model_source), "model_fingerprint": enc.model.fingerprint(),
            "tile_size": int(enc.tile_size(tile_size)), "overlap": float(overlap),
            "bands": None if bands is None else str(bands)}


def _finished(scene: Scene, root: Path, enc: Encoder, settings: dict) -> int | None:
    """The tile count of a finished, current part of ``scene``; None when it must be (re)built."""
    from ..geo import RasterSource
    from .fingerprint import raster_fingerprint
    from .store import check_patches, read_metadata

    part = scene.part(root)
    if not part.exists():
        return None
    try:
        emb, meta = read_metadata(part)
        check_patches(part, emb)
        t = meta["tiling"]
        same_tiling = (int(t["tile_size"]) == settings["tile_size"]
                       and abs(float(t["overlap"]) - settings["overlap"]) < 1e-9)
        if meta["model"]["fingerprint"] != settings["model_fingerprint"] or not same_tiling:
            return None
        with RasterSource(scene.raster, meta["raster"]["bands"], allow_no_crs=True) as src:
            if raster_fingerprint(src) != meta["raster"]["fingerprint"]:
                return None
        return int(meta.get("n_tiles", 0))
    except (GeoAlignError, OSError, KeyError, ValueError):
        return None


def _discard(scene: Scene, root: Path) -> None:
    for p in (scene.part(root), scene.patches(root)):
        if p.exists():
            p.unlink()


def build_collection(
    enc: Encoder,
    rasters: Sequence[str],
    root: str | PathLike,
    *,
    from_list: str | PathLike | None = None,
    scenes: Sequence[Scene] | None = None,
    shard: tuple[int, int] | None = None,
    env: DistEnv | None = None,
    overwrite: bool = False,
    bands: Sequence[int] | str | None = None,
    tile_size: int | None = None,
    overlap: float = 0.25,
    allow_no_crs: bool = False,
    progress_for: Callable[[Scene], Progress | None] | None = None,
    cancel: Cancel | None = None,
    stage: Stage | None = None,
    say: Say | None = None,
) -> CollectionBuild:
    """Index this process's share of ``rasters`` (paths or glob patterns, plus ``from_list``)
    into the collection folder ``root`` (see :mod:`.scenes` for its layout). ``scenes``: named
    scenes besides the rasters (STAC items, :func:`.stac_in.stac_scenes`).

    ``env``: torchrun's ranks (:func:`dist_env`; default: a single process); ``shard``: take
    share ``i`` of ``N`` instead (a job array). ``overwrite``: rebuild every scene of the share,
    finished or not. Returns every rank's outcomes on rank 0 (its own on the others).
    """
    t0 = time.perf_counter()
    env = env or DistEnv()
    root = check_collection_root(root)
    scenes = plan_scenes(rasters, from_list, scenes)
    settings = _settings(enc, tile_size, overlap, bands)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("parts", "patches", "work"):
        (root / sub).mkdir(exist_ok=True)
    write_manifest(root, scenes, settings, replace=overwrite)
    index, count = shard if shard is not None else (env.rank, env.world)
    mine = share(scenes, index, count)
    outcomes = [_index_scene(enc, s, root, settings, overwrite, bands, tile_size, overlap, allow_no_crs,
                             progress_for, cancel, stage, say, env.rank) for s in mine]
    scope = ("in this run" if shard is None and env.world == 1 else f"in shard {index}/{count}" if shard
             else f"on {env.world} ranks")
    result = CollectionBuild(root, outcomes, len(scenes), 0.0, env.world, scope)
    if env.world > 1:
        import torch.distributed as dist

        gathered: list[list[SceneOutcome] | None] = [None] * env.world
        dist.all_gather_object(gathered, outcomes)
        result.outcomes = sorted((o for part in gathered for o in (part or [])),
                                 key=lambda o: [s.name for s in scenes].index(o.name))
    result.seconds = time.perf_counter() - t0
    return result


def _index_scene(enc: Encoder, scene: Scene, root: Path, settings: dict, overwrite: bool,
                 bands: Sequence[int] | str | None, tile_size: int | None, overlap: float, allow_no_crs: bool,
                 progress_for: Callable[[Scene], Progress | None] | None, cancel: Cancel | None,
                 stage: Stage | None, say: Say | None, rank: int) -> SceneOutcome:

    t0 = time.perf_counter()
    try:  # another run building this scene now (the same command started twice): leave it to that one
        lock = output_lock(scene.part(root), what="building an index into")
        lock.__enter__()
    except OutputBusy as exc:
        if say is not None:
            say(f"failed: {scene.name} ({scene.raster}): {exc}")
        return SceneOutcome(scene.name, scene.raster, "failed", 0, scene.pixels, 0.0, str(exc), rank)
    try:
        return _index_scene_locked(enc, scene, root, settings, overwrite, bands, tile_size, overlap, allow_no_crs,
                                   progress_for, cancel, stage, say, rank, t0)
    finally:
        lock.__exit__(None, None, None)


def _index_scene_locked(enc: Encoder, scene: Scene, root: Path, settings: dict, overwrite: bool,
                        bands: Sequence[int] | str | None, tile_size: int | None, overlap: float,
                        allow_no_crs: bool, progress_for: Callable[[Scene], Progress | None] | None,
                        cancel: Cancel | None, stage: Stage | None, say: Say | None, rank: int,
                        t0: float) -> SceneOutcome:
    from .build import build_index

    if not overwrite:
        done = _finished(scene, root, enc, settings)
        if done is not None:
            return SceneOutcome(scene.name, scene.raster, "skipped", done, scene.pixels, 0.0, rank=rank)
    _discard(scene, root)
    try:
        built = build_index(enc, scene.raster, scene.part(root), overwrite=True, bands=bands, tile_size=tile_size,
                            overlap=overlap, allow_no_crs=allow_no_crs,
                            progress=progress_for(scene) if progress_for else None, cancel=cancel, stage=stage,
                            patches=scene.patches(root), work=scene.work(root), scene=scene.name)
    except (Cancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 -- one scene's failure must not stop the others
        msg = gdal_message(exc)  # GDAL's "See previous exception": its cause, the real reason
        if not isinstance(exc, GeoAlignError):
            msg = f"{type(exc).__name__}: {msg}"
        if say is not None:
            say(f"failed: {scene.name} ({scene.raster}): {msg}")
        return SceneOutcome(scene.name, scene.raster, "failed", 0, scene.pixels, time.perf_counter() - t0,
                            msg, rank)
    if say is not None:
        say(f"indexed {scene.name}: {built['n_tiles']} tiles in {built['seconds']:.1f} s")
    return SceneOutcome(scene.name, scene.raster, "indexed", int(built["n_tiles"]), scene.pixels,
                        time.perf_counter() - t0, rank=rank)


def maybe_build_ann(root: str | PathLike, want: bool | None, say: Say | None = None) -> dict | None:
    """After a run: build the collection's ANN index (:mod:`.ann`) when every listed scene is
    indexed and ``want`` is True, or None (auto) and the collection holds at least
    :data:`~.ann.ANN_MIN_PATCHES` patches. An up-to-date ANN index is kept."""
    import warnings

    from . import ann
    from .collection import SceneCollection

    if want is False:
        return None
    root = Path(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            coll = SceneCollection.open(root, check_raster=False)
        except InputError:
            return None
    if coll.missing:
        if want and say is not None:
            say(f"ANN index not built: {len(coll.missing)} scene(s) are not indexed yet")
        return None
    if want is None and coll.n_patches() < ann.ANN_MIN_PATCHES:
        return None
    current = ann.AnnIndex.load(root)
    if current is not None and current.is_current(coll):
        return None
    if say is not None:
        say(f"building the ANN index of {coll.n_patches():,} patches")
    meta = ann.build_ann(root)
    if say is not None:
        say(f"ANN index {meta['kind']} of {meta['patches']:,} patches in {meta['seconds']:.1f} s")
    return meta
