"""The scenes of a collection index: which rasters, under which names, and which process indexes which.

A collection index is a folder::

    idx/
      manifest.json            the scenes (name, raster, pixels, part file), the model, the tiling
      parts/<scene>.parquet    one scene index per scene (GeoParquet, the scene's CRS, a ``scene`` column)
      patches/<scene>.npy      its patch grid (int8), as a single-scene index keeps beside itself
      work/<scene>/            an unfinished scene (chunks kept for a resume; removed when done)
      ann/                     optional: the approximate nearest-neighbour index (:mod:`.ann`)

``parts/`` holds only Parquet files, so ``pyarrow.dataset.dataset("idx/parts")`` or DuckDB's
``read_parquet('idx/parts/*.parquet')`` read every tile of every scene as one table (each part's
geometry is in its own scene's CRS: the ``scene`` column tells them apart).

Work is shared by pixel count, not by file count: scenes are dealt largest first, each to the
share with the fewest pixels so far (deterministic, so every rank of a ``torchrun`` job and
every task of a job array computes the same plan without talking to the others).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..outputs import output_lock

__all__ = [
    "MANIFEST",
    "Scene",
    "check_collection_root",
    "expand_inputs",
    "is_collection",
    "parse_shard",
    "read_manifest",
    "scene_names",
    "share",
    "write_manifest",
]

MANIFEST = "manifest.json"
COLLECTION_FORMAT = "geoalign-index-collection"
COLLECTION_VERSION = 1
_GLOB = re.compile(r"[*?\[]")


@dataclass
class Scene:
    """One raster of a collection: ``name`` (unique in the collection), ``raster`` (path as given,
    made absolute for local files), ``pixels`` (width x height, what shares are balanced by;
    0 when the raster could not be opened)."""

    name: str
    raster: str
    pixels: int = 0
    stac: dict | None = None  #: a scene from a STAC item: its id, asset, href, self href, links (:mod:`.stac_in`)

    def part(self, root: Path) -> Path:
        return root / "parts" / f"{self.name}.parquet"

    def patches(self, root: Path) -> Path:
        return root / "patches" / f"{self.name}.npy"

    def work(self, root: Path) -> Path:
        return root / "work" / self.name


def is_collection(path: object) -> bool:
    """Whether ``path`` is a collection index folder (it holds a manifest)."""
    return path is not None and Path(str(path)).is_dir() and (Path(str(path)) / MANIFEST).is_file()


def check_collection_root(root: str | os.PathLike) -> Path:
    """Refuse a collection ``root`` that is a file, or that is named like a single-scene index
    (``.parquet``) without being a collection already (a folder named ``x.parquet`` would pass
    for a single-scene index file). Returns it as a Path."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"a collection index is a folder; {root} is a file", param="out")
    if root.suffix.lower() == ".parquet" and not is_collection(root):
        folder = root.with_suffix("")
        if root.is_dir():
            raise InputError(f"{root} is a folder: a .parquet name is for a single-scene index file; give a "
                             f"collection a folder name without .parquet (e.g. {folder}/)", param="out")
        raise InputError(f"several scenes make a collection index, which is a folder, not a .parquet file: "
                         f"name a folder (e.g. {folder}/), or index one raster into {root}", param="out")
    return root


def is_pattern(s: str) -> bool:
    """Whether an input names a glob pattern (``*``, ``?``, ``[``) rather than one file."""
    return not _is_remote(s) and bool(_GLOB.search(s))


def _is_remote(s: str) -> bool:
    return "://" in s or s.startswith("/vsi")


def expand_inputs(rasters: Sequence[str], from_list: str | os.PathLike | None = None) -> list[str]:
    """Rasters named on the command line, by glob patterns (quoted, so that the shell leaves
    them: ``'folder/*.tif'``, ``'tiles/**/*.tif'``) and in a list file (one path per line; blank
    lines and ``#`` comments skipped; relative paths from the list's folder). Order kept,
    duplicates dropped; a pattern that matches nothing is an error."""
    items: list[str] = []
    for r in rasters:
        if is_pattern(r):
            hits = sorted(glob.glob(r, recursive=True))
            if not hits:
                raise InputError(f"no file matches {r!r}", param="rasters")
            items += [h for h in hits if Path(h).is_file()]
        else:
            items.append(r)
    if from_list is not None:
        lst = Path(from_list)
        try:
            lines = lst.read_text(encoding="utf-8-sig").splitlines()
        except OSError as exc:
            raise InputError(f"cannot read the scene list {lst}: {exc.strerror or exc}", param="from_list") from None
        for line in lines:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            items.append(s if _is_remote(s) or Path(s).is_absolute() else str(lst.parent / s))
    from ..geo.paths import RASTER_FOLDER_SUFFIXES

    seen: set[str] = set()
    out = []
    for s in items:
        if not _is_remote(s) and Path(s).is_dir() and Path(s).suffix.lower() not in RASTER_FOLDER_SUFFIXES:
            what = "a collection index" if is_collection(s) else "a folder"
            raise InputError(f"not a raster: {s} is {what}; to index the rasters in a folder, give a quoted "
                             f"pattern such as '{Path(s) / '*.tif'}'")
        key = s if _is_remote(s) else str(Path(s).resolve())
        if key not in seen:
            seen.add(key)
            out.append(key)
    if not out:
        raise InputError("no raster to index", param="rasters")
    return out


def scene_names(rasters: Sequence[str]) -> list[str]:
    """A unique, file-system-safe name per raster: its file stem, with a short hash of its path
    where two rasters share a stem."""
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(r.rstrip("/")).stem) or "scene" for r in rasters]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    return [s if counts[s.lower()] == 1 else f"{s}-{hashlib.sha1(r.encode()).hexdigest()[:8]}"
            for s, r in zip(stems, rasters)]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` (0 <= i < N) -> (i, N)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise InputError(f"shard must be I/N with 0 <= I < N (e.g. 0/4); got {text!r}", param="shard")
    return int(m.group(1)), int(m.group(2))


def share(scenes: Sequence[Scene], index: int, count: int) -> list[Scene]:
    """The scenes of share ``index`` of ``count``: largest first to the lightest share (ties: the
    lower share number), then in the collection's order."""
    if count <= 1:
        return list(scenes)
    load = [0] * count
    mine = []
    order = sorted(range(len(scenes)), key=lambda i: (-max(scenes[i].pixels, 1), i))
    for i in order:
        k = min(range(count), key=lambda j: (load[j], j))
        load[k] += max(scenes[i].pixels, 1)
        if k == index:
            mine.append(i)
    return [scenes[i] for i in sorted(mine)]


# ---------------------------------------------------------------------------- manifest
def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a collection folder; InputError when it is not one."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise InputError(f"not a collection index: {root} has no {MANIFEST}", param="index")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable {path}: {exc}", param="index") from None
    if doc.get("format") != COLLECTION_FORMAT:
        raise InputError(f"not a GeoAlign collection index: {path}", param="index")
    if int(doc.get("version", 0)) > COLLECTION_VERSION:
        raise InputError(f"{path} is a version {doc.get('version')} collection; this GeoAlign reads up to "
                         f"version {COLLECTION_VERSION}: update GeoAlign", param="index")
    return doc


def manifest_scenes(doc: dict) -> list[Scene]:
    return [Scene(s["name"], s["raster"], int(s.get("pixels", 0)), s.get("stac")) for s in doc.get("scenes", [])]


def _scene_entry(s: Scene) -> dict:
    d = {"name": s.name, "raster": s.raster, "pixels": s.pixels}
    if s.stac is not None:
        d["stac"] = s.stac
    d["part"] = f"parts/{s.name}.parquet"
    return d


def write_manifest(root: Path, scenes: Sequence[Scene], settings: dict, replace: bool = False) -> dict:
    """Write (atomically) the manifest: the scenes already listed there, then the new ones.

    Every rank or shard writes the same content for the same command, so concurrent writers
    do not conflict. A scene listed before under the same name from another raster is refused
    (two collections mixed in one folder); other settings (model, tiling) must match too.
    ``replace`` (``--overwrite``): the manifest lists these scenes and settings only.
    """
    with output_lock(root / MANIFEST, wait=120.0):  # read, merge, write: one run at a time
        return _write_manifest(root, scenes, settings, replace)


def _write_manifest(root: Path, scenes: Sequence[Scene], settings: dict, replace: bool) -> dict:
    path = root / MANIFEST
    old: dict = {}
    if path.is_file() and not replace:
        old = read_manifest(root)
        if old.get("settings") != settings:
            diff = _diff(old.get("settings"), settings)
            raise InputError(f"{root} is a collection indexed with other settings ({diff}): use another --out "
                             "folder, or --overwrite to start it again", param="out")
    listed = {s.name: s for s in manifest_scenes(old)}
    for s in scenes:
        prev = listed.get(s.name)
        if prev is not None and prev.raster != s.raster:
            raise InputError(f"scene name {s.name!r} is {prev.raster} in {path}, not {s.raster}: "
                             "use another --out folder", param="out")
        listed.setdefault(s.name, s)
    doc = {"format": COLLECTION_FORMAT, "version": COLLECTION_VERSION, "settings": settings,
           "scenes": [_scene_entry(s) for s in listed.values()]}
    tmp = root / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return doc


def _diff(a: dict | None, b: dict) -> str:
    a = a or {}
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in keys[:3])
