"""The text side of an opened index: the model that answers its queries (a scene index or a collection).

Both :class:`~.scene_index.SceneIndex` and :class:`~.collection.SceneCollection` keep their image
side on disk and run only a text model: the one they were built with, loaded on first use, or one
bound to them (a model name or path, a loaded model, an :class:`~geoalign_core.inference.Encoder` /
``Predictor``) that must be the same model (its fingerprint).
"""

from __future__ import annotations

from typing import Any

from ..defaults import DEFAULT_BATCH_SIZE
from ..inference.encoder import Encoder
from ..inference.predictor import as_encoder

__all__ = ["TextSide"]


class TextSide:
    """What an opened index adds to answer with a text model (a mixin: see the module docstring)."""

    _enc: Encoder | None = None
    _device: str = "auto"
    _batch_size: int = DEFAULT_BATCH_SIZE

    def own_model(self) -> str:
        """The model the index was built with (its name or path)."""
        raise TypeError(f"{type(self).__name__} does not say which model built it")

    def check_compatible(self, enc: Encoder, bands: Any = None) -> None:
        """Refuse another model than the index's (and bands other than its own)."""
        raise TypeError(f"{type(self).__name__} cannot check a model")

    def bind(self, model: Any) -> Encoder:
        """Use ``model`` for the text side; returns its encoder (a name or path: its text tower alone where
        it allows, :mod:`geoalign_core.text_model`)."""
        enc = as_encoder(model, self._device, self._batch_size, text_only=True)
        self.check_compatible(enc)
        self._enc = enc
        return enc

    @property
    def encoder(self) -> Encoder:
        """The encoder that answers queries (the index's own model unless :meth:`bind` set one)."""
        if self._enc is None:
            self.bind(self.own_model())
        assert self._enc is not None
        return self._enc
