"""The encoder: one model, its text-embedding cache, and the image pass.

Every inference task runs in two steps, and this module is the first one plus the text side:

* the **image pass** (:meth:`Encoder.image_pass`): raster windows -> model-ready batches (read
  ahead in a thread) -> ONE backbone pass per tile -> :class:`EmbeddingBatch` es (global
  ``[B, D]`` and dense ``[B, D, h, w]`` embeddings). It knows nothing about phrases.
* **text**: :meth:`Encoder.encode_phrases` (cached per text for the encoder's lifetime; the model's
  background and vocabulary phrases also on disk, :mod:`.text_store`),
  :meth:`Encoder.encode_classes` (the one class encoder: every class through every prompt
  template, averaged), :meth:`Encoder.query_texts` (query phrases + background phrases).

The tasks (:mod:`.classify`, :mod:`.find`, :mod:`.regions`, :mod:`.heatmap`) score batches of
embeddings against texts; they accept batches from any source -- a live image pass or, later,
a stored index.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from rasterio.windows import Window

from ..data.text import clean_texts, fill_template
from ..errors import Cancelled, InputError
from ..geo import RasterSource, Tile
from ._reader import iter_batches
from .text_store import TextStore, store_path
from .text_store import enabled as text_store_enabled
from .vocabulary import BACKGROUND_PHRASES, DEFAULT_VOCABULARY, PROMPT_TEMPLATES

if TYPE_CHECKING:
    from ..model import GeoAlignCLIP
    from ..text_model import TextModel

__all__ = [
    "Cancel",
    "Cancelled",
    "EmbeddingBatch",
    "Encoder",
    "Progress",
    "Stage",
    "check_cancel",
    "class_embeddings",
    "enter_stage",
]

TEXT_CHUNK = 256
MIN_TILE_SIZE = 8

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
Stage = Callable[[str], None]


def enter_stage(stage: Stage | None, name: str) -> None:
    """Announce a stage of a run; the ``progress(done, total)`` calls that follow count its work."""
    if stage is not None:
        stage(name)


def check_cancel(cancel: Cancel | None) -> None:
    """Raise :class:`Cancelled` when ``cancel()`` says so."""
    if cancel is not None and cancel():
        raise Cancelled("cancelled")


@dataclass
class EmbeddingBatch:
    """What the image pass yields for one batch of tiles.

    Attributes:
        tiles: the tiles (``window``: raster pixels; ``image``/``valid``: model input size S).
        valid: bool ``[B, S, S]`` (CPU).
        glob: ``[B, D]`` L2-normalised global embeddings (model device, float32).
        dense: ``[B, D, h, w]`` UNnormalised patch embeddings or None: pool regions from it
            with ``model.pool_regions`` and normalise after pooling (as ``encode_regions``
            does); :attr:`dense_normalized` for per-patch similarity.
        done: windows consumed so far (progress).
    """

    tiles: list[Tile]
    valid: torch.Tensor
    glob: torch.Tensor
    dense: torch.Tensor | None
    done: int

    @property
    def dense_normalized(self) -> torch.Tensor:
        if self.dense is None:
            raise ValueError("this image pass ran without dense embeddings")
        return F.normalize(self.dense, dim=1)


def class_embeddings(encode: Callable[[list[str]], torch.Tensor], classes: Sequence[str],
                     templates: Sequence[str]) -> torch.Tensor:
    """``[C, D]``: each class through every template (``{}``, ``{a}``, ``{p}``:
    :func:`~geoalign_core.data.text.fill_template`), the embeddings averaged and re-normalised.

    ``encode`` maps texts to ``[N, D]`` normalised embeddings (e.g. :meth:`Encoder.encode_phrases`).
    """
    templates = tuple(templates) or ("{}",)
    texts = [fill_template(t, c) for c in classes for t in templates]
    emb = encode(texts).float().view(len(classes), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


class Encoder:
    """A loaded model with a phrase-embedding cache and the image pass.

    Args:
        model: a loaded :class:`~geoalign_core.model.GeoAlignCLIP`.
        batch_size: tiles per backbone pass.
        prefetch: batches read ahead in a background thread (0: read in the caller's thread);
            None: ``$GEOALIGN_PREFETCH`` if set, else 2 on a GPU or with 4+ CPU cores, else 0
            (on a 2-core machine the reader thread only competes with torch's compute threads).
        workers: tile readers, each on its own dataset handle: 1 is a thread of this process,
            more are reader processes (:mod:`~geoalign_core.geo.tile_workers`) (None:
            ``$GEOALIGN_READERS`` if set, else :func:`~geoalign_core.geo.readers.default_workers`:
            1 on a CPU, up to 8 on a GPU).
        templates: prompt templates for classes (:data:`~.vocabulary.PROMPT_TEMPLATES`).
        background: phrases competing with the query phrases in region scores.
    """

    def __init__(self, model: GeoAlignCLIP | TextModel, batch_size: int | None = None, *, prefetch: int | None = None,
                 workers: int | None = None, templates: Sequence[str] = PROMPT_TEMPLATES,
                 background: Sequence[str] = BACKGROUND_PHRASES,
                 vocabulary: Sequence[str] = DEFAULT_VOCABULARY) -> None:
        from ..geo.readers import check_workers

        if batch_size is None:  # chosen for the device (a GPU takes far more than a CPU)
            from .feed import device_batch_size

            batch_size = device_batch_size(model)
        if int(batch_size) < 1:
            raise InputError(f"batch size must be at least 1; got {batch_size}", param="batch_size")
        self.model = model
        self.model_source = model.name  # what the user named it (a zoo name, a path): set by the Predictor
        #: find computes its zoom view even without a ``find:zoom`` map (:func:`~.zoom.collecting_zoom_view`)
        self.collect_zoom_view = False
        self.batch_size = int(batch_size)
        self._prefetch = prefetch
        self._workers = check_workers(workers)
        self.templates = tuple(templates)
        self.background = tuple(background)
        self.vocabulary = tuple(vocabulary)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._text_store: TextStore | bool | None = None  # None: not opened yet; False: off
        self._storable: set[str] = set()  # the texts of the model (never the user's) that the store keeps
        self.texts_encoded = 0  # texts sent through the text tower (cache misses)
        self.text_batches = 0  # text-tower forward passes

    # ------------------------------------------------------------------ basics
    @property
    def prefetch(self) -> int:
        """Batches read ahead by the reader thread (see the constructor)."""
        if self._prefetch is not None:
            return int(self._prefetch)
        env = os.environ.get("GEOALIGN_PREFETCH", "").strip()
        if env.isdigit():
            return int(env)
        return 2 if self.device.type == "cuda" or (os.cpu_count() or 1) >= 4 else 0

    @prefetch.setter
    def prefetch(self, value: int | None) -> None:
        self._prefetch = value

    @property
    def workers(self) -> int:
        """Threads decoding tiles in the image pass (see the constructor)."""
        from .feed import resolve_workers

        return resolve_workers(self._workers, self.device)

    @workers.setter
    def workers(self, value: int | None) -> None:
        from ..geo.readers import check_workers

        self._workers = check_workers(value)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def input_size(self) -> int:
        """Side of the square model input every tile is resampled to."""
        return self.model.image_size

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach())

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def tile_size(self, tile_size: int | None) -> int:
        """The tile side to use: the model's input size for None; at least 8 pixels."""
        if tile_size is None:
            return self.input_size
        if int(tile_size) != tile_size or int(tile_size) < MIN_TILE_SIZE:
            raise InputError(f"tile size must be a whole number of pixels >= {MIN_TILE_SIZE}; got {tile_size}",
                             param="tile_size")
        return int(tile_size)

    # ------------------------------------------------------------------ text side
    def encode_phrases(self, phrases: Sequence[str] | str) -> torch.Tensor:
        """``[N, D]`` normalised phrase embeddings (on the model's device), cached per text."""
        if isinstance(phrases, str):
            phrases = [phrases]
        phrases = list(phrases)
        missing = list(dict.fromkeys(p for p in phrases if p not in self._text_cache))
        store = self._store() if missing else None
        if store is not None:  # the model's fixed texts, kept on disk by an earlier process
            for text, e in store.get(missing).items():
                self._text_cache[text] = e.to(self.device)
            missing = [p for p in missing if p not in self._text_cache]
        if missing:
            with torch.no_grad(), self.autocast():
                for i in range(0, len(missing), TEXT_CHUNK):
                    chunk = missing[i : i + TEXT_CHUNK]
                    emb = F.normalize(self.model.encode_text(chunk).float(), dim=-1)
                    self.text_batches += 1
                    self.texts_encoded += len(chunk)
                    for text, e in zip(chunk, emb):
                        self._text_cache[text] = e
            if store is not None:
                store.add({t: self._text_cache[t] for t in missing if t in self._storable})
        if not phrases:
            return torch.zeros((0, self.model.embed_dim), device=self.device)
        return torch.stack([self._text_cache[p] for p in phrases])

    def _store(self) -> TextStore | None:
        """The on-disk store of this model's background and vocabulary embeddings (:mod:`.text_store`),
        or None when it is turned off."""
        if self.model.training:  # weights that change under the store's key
            return None
        if self._text_store is None:
            self._text_store = TextStore(store_path(self.model.fingerprint(fresh=True), self.device.type)) \
                if text_store_enabled() else False
        return self._text_store if isinstance(self._text_store, TextStore) else None

    def encode_classes(self, classes: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """``[C, D]`` class embeddings (:func:`class_embeddings` with this encoder's templates and cache)."""
        return class_embeddings(self.encode_phrases, classes, templates or self.templates)

    def query_texts(self, phrases: list[str]) -> tuple[torch.Tensor, list[str]]:
        """Embeddings of ``phrases + background`` (background minus the query phrases, up to a plural:
        :func:`~.vocabulary.background_for`) and that background: the texts a box's scan score is a
        softmax over."""
        from .vocabulary import background_for, competitors_for

        bg = background_for(phrases, self.background)
        # the vocabulary competitors join the same text pass (cached for vocabulary_texts)
        in_bg, own = set(bg), set(phrases)
        vocab = [v for v in competitors_for(phrases, self.vocabulary) if v not in in_bg]
        self._storable.update(t for t in bg + vocab if t not in own)
        texts = self.encode_phrases(phrases + bg + vocab)
        return texts[: len(phrases) + len(bg)], bg

    def vocabulary_texts(self, phrases: list[str], background: Sequence[str] = ()) -> tuple[torch.Tensor, list[str]]:
        """Embeddings of the vocabulary phrases that compete with ``phrases`` besides ``background``
        (:func:`~.vocabulary.competitors_for`: not naming a query's thing), and those phrases."""
        from .vocabulary import competitors_for

        seen = set(background)
        vocab = [v for v in competitors_for(phrases, self.vocabulary) if v not in seen]
        own = set(phrases)
        self._storable.update(t for t in vocab if t not in own)
        return self.encode_phrases(vocab), vocab

    # ------------------------------------------------------------------ the model card
    @property
    def card(self):
        """The model's :class:`~geoalign_core.card.ModelCard` (None: the model has none)."""
        return getattr(self.model, "card", None)

    def score_map(self, task: str, out_of_domain: bool = False):
        """The card's fitted :class:`~.calibration.LogisticMap` for ``task`` ("find", "tiles", "similar"), or
        None; ``out_of_domain``: the one for real imagery of a synthetic-only model (:meth:`ModelCard.score_map
        <geoalign_core.card.ModelCard.score_map>`)."""
        card = self.card
        return card.score_map(task, out_of_domain) if card is not None else None

    def unknown_words(self, phrase: str) -> list[str]:
        """Words of ``phrase`` the model never saw in training (empty when its card lists no vocabulary)."""
        card = self.card
        return card.unknown_words(phrase) if card is not None else []

    def clean(self, texts: Sequence[str] | str | None, what: str = "phrase") -> list[str]:
        """:func:`~geoalign_core.data.text.clean_texts`, then a warning for texts the model reads only in part."""
        out = clean_texts(texts, what)
        self.warn_long_texts(out, what)
        return out

    def warn_long_texts(self, texts: Sequence[str], what: str = "phrase") -> None:
        """Warn (one line each) about texts longer than the text tower reads: the rest is ignored."""
        encode = getattr(self.model.tokenizer, "encode", None)
        limit = int(self.model.context_length)
        if encode is None:
            return
        for t in texts:
            n = len(encode(t)) + 2  # + start and end tokens
            if n > limit:
                shown = t if len(t) <= 40 else t[:37] + "..."
                warnings.warn(f"{what} {shown!r} is {n} tokens long; the model reads the first {limit}, "
                              "the rest is ignored", UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ image side
    def image_pass(
        self,
        source: RasterSource,
        windows: Sequence[Window],
        dense: bool = True,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        skip_empty: bool = True,
    ) -> Iterator[EmbeddingBatch]:
        """One backbone pass per tile of ``windows``; yields :class:`EmbeddingBatch` es.

        Reading and preprocessing run in the background (:attr:`workers` reading tiles: a thread,
        or reader processes), overlapping the model; on a GPU each batch is held in page-locked
        memory and copied without blocking.
        ``cancel`` is polled before each batch (raises :class:`Cancelled`); ``progress`` gets
        ``(windows done, windows total)`` after each batch.
        """
        total = len(windows)
        check_cancel(cancel)
        model = self.model
        cuda = self.device.type == "cuda"
        batches = iter_batches(
            source, windows, self.input_size, self.batch_size, skip_empty=skip_empty, prefetch=self.prefetch,
            workers=self.workers, pin=cuda,
        )
        with contextlib.closing(batches):
            for tb in batches:
                check_cancel(cancel)
                x = (tb.pinned if tb.pinned is not None else torch.from_numpy(tb.images)).to(
                    self.device, non_blocking=True)
                with torch.no_grad(), self.autocast():
                    glob, dmap = model.forward_visual(model.preprocess(x), dense=dense)
                    glob = F.normalize(glob.float(), dim=-1)
                    dmap = dmap.float() if dmap is not None else None
                if progress is not None:
                    progress(tb.done, total)
                yield EmbeddingBatch(tb.tiles, torch.from_numpy(tb.valid), glob, dmap, tb.done)
        if progress is not None:
            progress(total, total)


def tile_scale(tile: Tile) -> float:
    """Raster pixels per model-input pixel of a tile."""
    return float(tile.window.width) / float(tile.valid.shape[-1])

