"""Each stored patch's score against the background phrases, kept beside the patch file.

``find``'s score of a patch is ``softmax(logit_scale * cos)`` over the query phrases and the
background phrases (:func:`~geoalign_core.inference.scoring.phrase_probabilities`). The
background is the same for every query of a model, so its part of the softmax's denominator --
``lse = log sum_b exp(logit_scale * cos(patch, b))`` per patch -- is computed once, with the same
int8 matrix product as the scan (:func:`~.patch_scores.int8_dot`), and stored: a query then scans
the patch file against its phrases only (one row of the matrix product instead of eleven) and
reads the background's share from the stored ``lse``, which gives the same scores up to float
rounding. A query whose background leaves some stored phrases out (the phrase "trees" does not
compete with the background phrase "trees") takes their terms out of ``lse``; where they held
nearly all of it, those patches are scored against the query's background rows as before.

``<patch file>.background.npz`` (``scene.parquet.patches.background.npz``; a collection's
``patches/<scene>.background.npz``) holds ``lse`` (float32 ``[tiles, h * w]``, 1/128 of the patch
file at 512-d), the background embeddings it was computed with (``texts``), the model's
``logit_scale``, and what ties it to its index (the patch file's digest, the build's time and the
model's fingerprint). :func:`~.build.build_index` writes it; a scan of a whole index without one
(an index built before it existed) writes it on the way, when the folder is writable. A file that
does not match -- another index, another model, other background phrases or embeddings -- is
ignored and the scan runs against every background row, so it is a cache: deleting it costs one
slower query.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["SUFFIX", "TEXT_ATOL", "StoredBackground", "background_path", "load_background", "save_background"]

SUFFIX = ".background.npz"
#: stored and query background embeddings that differ by at most this (per element) are the same texts: one
#: text encoded in a batch of another size may differ in its last bits (the scan rounds them to bfloat16)
TEXT_ATOL = 1e-5


def background_path(patches: str | os.PathLike) -> Path:
    """Where the stored background of a patch file goes: ``<patch file without .npy>.background.npz``."""
    p = Path(patches)
    return p.with_name((p.name[:-4] if p.name.endswith(".npy") else p.name) + SUFFIX)


def tie(emb: dict, meta: dict) -> dict:
    """What ties a stored background to its index: the patch file's digest and shape, the build, the model."""
    pe = emb.get("patch_embeddings", {})
    return {"digest": pe.get("digest"), "shape": [int(s) for s in pe.get("shape", [])[:2]],
            "created": meta.get("created"), "model": meta.get("model", {}).get("fingerprint")}


@dataclass
class StoredBackground:
    """``lse [tiles, h * w]`` float32 (memory-mapped) against the background ``texts [B, D]`` at ``logit_scale``."""

    lse: np.ndarray
    texts: torch.Tensor
    logit_scale: float

    def plan(self, queries: torch.Tensor, n_queries: int, logit_scale: float | None) -> torch.Tensor | None:
        """The stored background texts that the query's background (``queries[n_queries:]``) leaves out
        (``[R, D]``, often none), or None when the stored background cannot stand in for it: another
        logit scale, a query background text that is not stored, or no stored text left."""
        if logit_scale is None or abs(float(logit_scale) - self.logit_scale) > 1e-6 * max(1.0, self.logit_scale):
            return None
        bg = queries[n_queries:].detach().float().cpu()
        if len(bg) == 0 or bg.shape[1] != self.texts.shape[1]:
            return None
        close = (bg[:, None, :] - self.texts[None]).abs().amax(dim=-1) <= TEXT_ATOL  # [query bg, stored]
        if not (bool((close.sum(dim=1) == 1).all()) and bool((close.sum(dim=0) <= 1).all())):
            return None  # a query text that is not stored (or two that are one)
        return self.texts[~close.any(dim=0)]


def load_background(patches: str | os.PathLike, emb: dict, meta: dict) -> StoredBackground | None:
    """The stored background of an index's patch file, or None (none there, or not this index's)."""
    path = background_path(patches)
    if not path.is_file():
        return None
    want = tie(emb, meta)
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            if info.get("tie") != want:
                return None
            texts = torch.from_numpy(np.asarray(z["texts"], dtype=np.float32))
        lse = _mapped_member(path, "lse.npy")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, struct.error):
        return None
    if list(lse.shape) != want["shape"] or texts.ndim != 2:
        return None
    return StoredBackground(lse, texts, float(info["logit_scale"]))


def _mapped_member(path: Path, name: str) -> np.ndarray:
    """A float32 array of an ``.npz`` file, memory-mapped where it lies (``np.savez`` stores members
    uncompressed): a query reads the rows it scans, not the whole file first."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{name} is compressed")
    with path.open("rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)  # the member's local header: its name and extra field come next
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise ValueError(f"no local header for {name}")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if dtype != np.float32 or fortran or offset + int(np.prod(shape)) * 4 > path.stat().st_size:
        raise ValueError(f"{name} is not a float32 array")
    return np.memmap(path, dtype=np.float32, mode="r", shape=tuple(shape), offset=offset)


def save_background(patches: str | os.PathLike, emb: dict, meta: dict, lse: np.ndarray, texts: torch.Tensor,
                    logit_scale: float) -> Path | None:
    """Write the stored background beside the patch file (atomically); None where it cannot be
    written (a read-only folder: the queries then scan every background row, as without it)."""
    path = background_path(patches)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp.npz")
    info = {"tie": tie(emb, meta), "logit_scale": float(logit_scale)}
    try:
        np.savez(tmp, lse=np.asarray(lse, dtype=np.float32), texts=texts.detach().float().cpu().numpy(),
                 info=np.asarray(json.dumps(info)))
        os.replace(tmp, path)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path
