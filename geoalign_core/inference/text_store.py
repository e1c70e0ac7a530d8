"""An on-disk store of a model's fixed text embeddings: its background and vocabulary phrases.

Every calibrated ``find`` compares a box with the model's background phrases and the vocabulary
phrases that compete with the query (:mod:`.vocabulary`): about 60 texts for the demo model. A
fresh process (a CLI query from an index, a new engine) would send them all through the text
tower before its first answer, although they never change for a model. They are kept here,
per model and device, so that a fresh process encodes only the user's own phrases.

* Where: ``<cache>/text-embeddings/<fingerprint>-<device type>.pt`` (``<cache>``: ``$GEOALIGN_CACHE``,
  default ``~/.cache/geoalign``; :func:`~geoalign_core.zoo_table.cache_dir`). The fingerprint
  (:meth:`GeoAlignCLIP.fingerprint <geoalign_core.model.GeoAlignCLIP.fingerprint>`) changes with the
  weights, the architecture and the text length, so a fine-tuned model never reads another's texts;
  the device type is part of the name because a GPU encodes in half precision.
* What: only the model's background and vocabulary phrases, never the user's phrases.
* Exactness: the vectors are stored as computed (float32) and read back bit for bit. The user's
  phrases then go through the text tower without them, in a smaller batch, which can change their
  embeddings in the last bits (as any other batch size would).
* ``GEOALIGN_TEXT_STORE=0`` turns it off; a store that cannot be read or written is ignored (the
  texts are encoded as without it).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch

STORE_FOLDER = "text-embeddings"
MAX_TEXTS = 4096  # a model's fixed texts are far fewer; a bound against a store that only grows
ENV = "GEOALIGN_TEXT_STORE"


def enabled() -> bool:
    """False when ``$GEOALIGN_TEXT_STORE`` is 0 / false / no / off."""
    return os.environ.get(ENV, "").strip().lower() not in ("0", "false", "no", "off")


def store_path(fingerprint: str, device_type: str) -> Path:
    """The store file of a model (its :meth:`fingerprint <geoalign_core.model.GeoAlignCLIP.fingerprint>`)
    on a device type ("cpu", "cuda")."""
    from ..zoo_table import cache_dir

    return cache_dir() / STORE_FOLDER / f"{fingerprint}-{device_type}.pt"


class TextStore:
    """The stored text embeddings of one model on one device type, read once, written when texts are added."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._texts: dict[str, torch.Tensor] | None = None

    def _load(self) -> dict[str, torch.Tensor]:
        if self._texts is None:
            self._texts = {}
            if self.path.is_file():
                try:
                    data = torch.load(self.path, map_location="cpu", weights_only=True)
                    texts, vectors = data["texts"], data["vectors"]
                    if isinstance(texts, list) and isinstance(vectors, torch.Tensor) and len(texts) == len(vectors):
                        self._texts = {str(t): v for t, v in zip(texts, vectors)}
                except Exception:  # noqa: BLE001 - a damaged store is ignored: the texts are encoded again
                    self._texts = {}
        return self._texts

    def get(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The stored vectors of ``texts`` (those that are stored), as float32 CPU tensors."""
        stored = self._load()
        return {t: stored[t] for t in texts if t in stored}

    def add(self, vectors: dict[str, torch.Tensor]) -> None:
        """Store ``vectors`` (text -> embedding) and write the file atomically (a failed write is ignored)."""
        stored = self._load()
        new = {t: v.detach().float().cpu() for t, v in vectors.items() if t not in stored}
        if not new or len(stored) + len(new) > MAX_TEXTS:
            return
        stored.update(new)
        names = list(stored)
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=self.path.parent)
            os.close(fd)
            try:
                torch.save({"texts": names, "vectors": torch.stack([stored[t] for t in names])}, tmp)
                os.replace(tmp, self.path)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


__all__ = ["MAX_TEXTS", "TextStore", "enabled", "store_path"]
