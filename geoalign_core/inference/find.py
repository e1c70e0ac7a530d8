"""Find objects by text: candidate boxes from each tile's dense embeddings, scored, de-duplicated,
and placed better at twice the zoom.

:func:`find` is the task. Its steps are separate functions so that the candidates can be
scored from stored embeddings too: :func:`find_candidates` (an image pass, then
:func:`~.candidates.pool_candidates` per batch), :func:`~.refine.refine_boxes` (a second look at
each kept box); :mod:`.object_sizes` adds what a known object size changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import geopandas as gpd
import numpy as np
import shapely
import torch
from rasterio.windows import Window

from ..defaults import (
    DEFAULT_MAX_RESULTS,
    DEFAULT_MIN_SCORE,
    DEFAULT_NMS_IOU,
    MAX_PHRASES,
    REFINE_MAX_BOXES,
)
from ..errors import InputError
from ..geo import pixel_boxes_to_polygons
from ..geo.vectors import parse_crs, results_in_crs
from . import scoring
from .candidates import keep_top_per_tile, pool_candidates, score_candidates
from .encoder import Cancel, Encoder, Progress, Stage, enter_stage
from .metadata import raster_meta, run_metadata
from .object_sizes import SIZE_RANGE, object_sizes, size_fits, sized_windows
from .refine import REFINE_SPARE, refine_boxes, refine_selection
from .regions import centres_in, load_regions, load_within, pd_strings
from .source import EmbeddingSource, open_source, scan_grid
from .zoom import zoom_logodds, zoom_scorer, zoom_wanted

__all__ = ["SIZE_RANGE", "find", "find_candidates", "keep_top_per_tile", "object_sizes", "pool_candidates",
           "refine_boxes", "refine_selection", "score_candidates", "size_fits", "sized_windows"]

PRE_NMS = 64  # candidates per (tile, phrase) considered for NMS
_BUFFER_LIMIT = 20_000


def find(
    enc: Encoder,
    raster: str | PathLike | EmbeddingSource,
    phrases: Sequence[str] | str,
    regions: str | PathLike | gpd.GeoDataFrame | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    max_results: int = DEFAULT_MAX_RESULTS,
    *,
    nms_iou: float = DEFAULT_NMS_IOU,
    bands: Sequence[int] | str | None = None,
    tile_size: int | None = None,
    overlap: float | None = None,
    bounds: Sequence[float] | None = None,
    allow_no_crs: bool = False,
    refine: bool | None = None,
    layer: str | int | None = None,
    buffer: float | None = None,
    within: str | PathLike | gpd.GeoDataFrame | None = None,
    object_size: float | Sequence[float] | None = None,
    exact: bool | None = None,
    crs: object | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    stage: Stage | None = None,
) -> gpd.GeoDataFrame:
    """Find objects matching each phrase.

    Candidates (without ``regions``): connected components of each phrase's dense
    similarity map at several relative thresholds, plus multi-scale sliding windows; all
    RoIAlign-pooled from the tile's one dense map, scored (see
    :mod:`~geoalign_core.inference.scoring`), NMS per tile, then NMS across tile borders
    (raster pixel frame), score threshold, top ``max_results`` per phrase.
    With ``regions`` the given features' bounding boxes are the candidates (no NMS).

    ``within`` (a vector file or GeoDataFrame of polygons, any CRS): search inside them only:
    tiles that touch none are skipped, and a box is kept when its centre lies in one of them.
    (``regions``, by contrast, makes each feature's box *the* candidate.) ``layer``: the layer of
    the ``regions`` or ``within`` file; ``buffer``: gives their points and lines an area.

    ``refine`` (without ``regions``; default: on for a raster, off for an index): the best
    :data:`REFINE_MAX_BOXES` kept boxes per phrase
    (of the best ``max_results`` + :data:`REFINE_SPARE`; the others stay as found, so the cost
    does not grow with ``max_results``) are looked at again at twice the zoom
    (:func:`refine_boxes`) and may move to a better placed box of at least half its area;
    a box moves only when the moved box scores at least as high at the tile zoom. Scores
    are those of the tile pass. Then NMS again and the top ``max_results``. The run metadata
    records ``n_refine_candidates`` (boxes looked at) and ``n_refined`` (boxes moved).

    ``raster``: a raster path, or a :class:`~geoalign_core.index.SceneIndex`: the candidates
    then come from its stored embeddings, only in the tiles where a phrase can score (see
    :func:`find_candidates`), and ``overlap`` defaults to the index's (else 0.25); the box
    refinement re-reads the raster for the kept boxes only.

    ``object_size`` (metres: a side, or width and height): the objects' typical size, for every
    phrase; without it, a fine-tuned model's labelled sizes (``spec.extra["object_sizes"]``,
    written by ``geoalign finetune``), else the model card's typical sizes (measured on its training
    labels, for classes whose size varies little), apply to the phrases that name one of those
    classes ("red car" -> "car"). For a phrase with a size, windows of that size (stepped by a
    quarter of it) join the candidates, only boxes within :data:`SIZE_RANGE` x of its area are
    kept, and its boxes are not refined (:mod:`.object_sizes`).

    ``score``: the estimated probability that the box shows the phrase (:mod:`.calibration`: the
    model card's map of the box's evidence against its competitors and the scene); ``min_score``
    applies to it. A model without a calibration gives ``standout`` instead of ``score``.

    ``crs``: the results' CRS (default: the raster's). ``exact`` is for a collection index
    (:meth:`~geoalign_core.index.SceneCollection.find`); one scene is always scanned whole.

    Rows: ``geometry`` (box), ``phrase``, ``score`` (or ``standout``), ``rank`` (1 = best, per phrase).
    ``attrs["score_features"]``: the :data:`~.calibration.FEATURES` of each row (for fitting a calibration).
    """
    phrases = enc.clean(phrases)
    check_phrase_count(phrases)
    if not 0.0 <= float(min_score) <= 1.0:
        raise InputError(f"min score must be in [0, 1]; got {min_score}", param="min_score")
    if int(max_results) < 1:
        raise InputError(f"max results must be at least 1; got {max_results}", param="max_results")
    if exact is not None:
        raise InputError("exact is for a collection index (an index folder): one scene is always scanned whole",
                         param="exact")
    if crs is not None:
        parse_crs(crs)  # an unknown CRS fails before the image pass
    unknown = [bool(enc.unknown_words(p)) for p in phrases]
    with open_source(enc, raster, bands, allow_no_crs, phrases=phrases) as src:
        ts, overlap, area = scan_grid(src, tile_size, overlap, bounds)
        refine = src.live if refine is None else bool(refine)  # an index: no image pass unless asked for
        extra: dict[str, object] = {}
        zoom: torch.Tensor | None = None  # the boxes' zoom view (:mod:`.zoom`), when computed
        if regions is not None:
            feats, rboxes, n_out = load_regions(regions, src, area, layer, buffer)
            texts, bg = enc.query_texts(phrases)
            vocab, vocab_names = enc.vocabulary_texts(phrases, bg)
            enter_stage(stage, "scoring regions")
            cal = src.calibration(area, ts, overlap, texts, len(phrases), cancel).for_phrases(
                enc, phrases, src.out_of_domain)
            emb = src.region_embeddings(rboxes, area, ts, overlap, progress, cancel)
            probs = scoring.phrase_probabilities(emb, texts, len(phrases), enc.logit_scale).cpu()
            zv_all = scoring.vocabulary_logodds(emb, texts, vocab, len(phrases), enc.logit_scale).cpu()
            floor = cal.raw_threshold(float(min_score))
            k_idx, p_idx = (probs >= floor.view(1, -1)).nonzero(as_tuple=True)
            boxes = torch.from_numpy(rboxes)[k_idx]
            scores = probs[k_idx, p_idx]
            zv = zv_all[k_idx, p_idx]
            keep = scoring.nms_per_label(boxes, scores, p_idx, iou=1.0, cap=int(max_results))
            extra = {"regions": str(regions) if not isinstance(regions, gpd.GeoDataFrame) else "GeoDataFrame",
                     "n_regions": len(feats), "n_regions_outside": n_out}
        else:
            texts, bg = enc.query_texts(phrases)
            vocab, vocab_names = enc.vocabulary_texts(phrases, bg)
            windows = src.windows(ts, overlap, area)
            zone = None
            if within is not None:
                zone, n_within = load_within(within, src, area, layer, buffer)
                windows = [w for w in windows if zone.intersects(shapely.box(
                    w.col_off, w.row_off, w.col_off + w.width, w.row_off + w.height))]
                extra |= {"within": str(within) if not isinstance(within, gpd.GeoDataFrame) else "GeoDataFrame",
                          "n_within": n_within}
            enter_stage(stage, "scanning tiles")
            cal = src.calibration(area, ts, overlap, texts, len(phrases), cancel).for_phrases(
                enc, phrases, src.out_of_domain)
            zoom_cal = zoom_scorer(enc, src, cal, phrases)
            cal = zoom_cal or cal  # the scan's threshold is in the scores the boxes will get
            sizes, size_meta = object_sizes(enc, phrases, object_size, src, ts)
            boxes, scores, p_idx, n_scanned, zv_found = find_candidates(
                enc, src, windows, area, texts, len(phrases), cal.raw_threshold(float(min_score)),
                int(max_results), float(nms_iou), progress, cancel, sizes=sizes, vocab=vocab,
            )
            assert zv_found is not None  # a vocabulary was given: every box has its log-odds
            zv = zv_found
            if size_meta:
                extra["object_sizes_m"] = size_meta
            if zone is not None:
                inside = centres_in(zone, boxes)
                boxes, scores, p_idx, zv = boxes[inside], scores[inside], p_idx[inside], zv[inside]
            if refine:
                # the boxes worth refining: the best distinct ones (duplicates dropped first, as at the end, so
                # that refinement does not shrink the result below what find without it returns)
                keep = scoring.nms_per_label(boxes, scores, p_idx, float(nms_iou),
                                             cap=int(max_results) + min(int(max_results), REFINE_SPARE), nested=True)
                boxes, scores, p_idx, zv = boxes[keep], scores[keep], p_idx[keep], zv[keep]
                sized = torch.zeros(len(p_idx), dtype=torch.bool) if sizes is None else \
                    ~torch.isnan(sizes[p_idx, 0])  # boxes of a known size stay as found
                look = refine_selection(scores, p_idx, ~sized, REFINE_MAX_BOXES)
                with src.live_source() as live:
                    moved_boxes, n_moved = refine_boxes(enc, live, area, boxes[look], p_idx[look], texts,
                                                        len(phrases), ts, overlap, cancel, progress, stage)
                boxes = boxes.clone()
                boxes[look] = moved_boxes
                extra |= {"n_refined": n_moved, "n_refine_candidates": int(look.sum()),
                          "refine_max_boxes": REFINE_MAX_BOXES}
                if zone is not None:  # a moved box keeps its centre in the old box, maybe not in the zone
                    inside = centres_in(zone, boxes)
                    boxes, scores, p_idx, zv = boxes[inside], scores[inside], p_idx[inside], zv[inside]
            keep = scoring.nms_per_label(boxes, scores, p_idx, float(nms_iou), cap=int(max_results), nested=True)
            if zoom_wanted(enc, src, zoom_cal):
                with src.live_source() as live:
                    zoom = zoom_logodds(enc, live, boxes[keep], p_idx[keep], texts, vocab, len(phrases), ts, cancel,
                                        progress, stage)
            extra["zoom_view"] = zoom is not None
            extra |= {"nested_overlap": scoring.NESTED_OVERLAP, "n_windows": len(windows),
                      "n_windows_scored": n_scanned, "nms_iou": float(nms_iou),
                      "refine": bool(refine),
                     "dense_thresholds": list(scoring.DENSE_THRESHOLDS),
                     "window_scales_patches": list(scoring.WINDOW_SCALES)}
        boxes, raw, p_idx, zv = boxes[keep], scores[keep], p_idx[keep], zv[keep]
        scores = cal.score(raw, p_idx, zv, zoom)
        feats = cal.features(raw, p_idx, zv, zoom)
        if cal.calibrated:  # the scan kept boxes whose score can reach min_score: those that do
            sel = scores >= float(min_score)
            boxes, raw, p_idx, scores, feats = boxes[sel], raw[sel], p_idx[sel], scores[sel], feats[sel]
        order = np.lexsort((-raw.numpy(), -scores.numpy(), p_idx.numpy()))  # best score first per phrase
        boxes, scores, p_idx = boxes[order], scores[order], p_idx[order]
        ranks = np.zeros(len(order), dtype=np.int64)
        for p in range(len(phrases)):
            sel = (p_idx == p).numpy()
            ranks[sel] = np.arange(1, int(sel.sum()) + 1)
        gdf = gpd.GeoDataFrame(
            {
                "phrase": pd_strings([phrases[int(i)] for i in p_idx]),
                cal.column: scores.numpy().astype(np.float64),
                "rank": ranks,
            },
            geometry=pixel_boxes_to_polygons(boxes.numpy().reshape(-1, 4), src.transform),
            crs=src.crs,
        )
        gdf.attrs["geoalign"] = run_metadata(
            enc,
            "find",
            **raster_meta(src, ts, overlap, bounds, enc.batch_size),
            phrases=phrases,
            background_phrases=bg,
            vocabulary_phrases=vocab_names,
            min_score=float(min_score),
            max_results=int(max_results),
            score_column=cal.column,
            score=cal.as_dict(phrases)["value"],
            raw_score="softmax(logit_scale * cos) over the phrases and background phrases (ranks candidates); the "
                      "score also reads the log-odds against the vocabulary phrases",
            calibration=cal.as_dict(phrases),
            unknown_phrases=[p for p, u in zip(phrases, unknown) if u],
            n_matches=len(gdf),
            **extra,
        )
        gdf.attrs["score_features"] = feats.numpy()[order]
    return results_in_crs(gdf, crs)



def check_phrase_count(phrases: Sequence[str]) -> None:
    """At most :data:`~geoalign_core.defaults.MAX_PHRASES` phrases per run (memory grows with them)."""
    if len(phrases) > MAX_PHRASES:
        raise InputError(f"{len(phrases)} phrases: find takes at most {MAX_PHRASES} per run (memory grows with "
                         "their number); split the list into several runs", param="phrases")


def find_candidates(
    enc: Encoder,
    src: EmbeddingSource,
    windows: list[Window],
    area: Window,
    texts: torch.Tensor,
    n_phrases: int,
    min_score: float | torch.Tensor,
    max_results: int,
    nms_iou: float,
    progress: Progress | None,
    cancel: Cancel | None,
    cosine: bool = False,
    sizes: torch.Tensor | None = None,
    vocab: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
    """Candidate boxes scored over the source's embeddings of ``windows``.

    Scores: ``texts`` are the ``n_phrases`` query phrases then background phrases, and a
    box scores :func:`scoring.phrase_probabilities`; with ``cosine`` the ``n_phrases`` rows of
    ``texts`` are query vectors and a box scores its cosine similarity with each (``similar``).

    A source may first narrow the windows down to those where a query can score, best first
    (``src.candidate_windows``: a scene index ranks its stored patches against the queries
    in one matrix product; a live raster keeps them all); then only the tiles that can still
    reach the ``max_results``-th box of a query are pooled (``src.candidate_batches``), and the
    scan stops once none is left. ``sizes`` (``[n_phrases, 2]``
    raster-pixel width and height, NaN where unknown): windows of those sizes join the candidates
    and a query keeps boxes within :data:`SIZE_RANGE` x of its size's area only. ``vocab`` (``[V, D]``):
    each kept box also gets its log-odds against every text, vocabulary included
    (:func:`scoring.vocabulary_logodds`). Returns (raster-pixel boxes, scores, query index, windows
    scored, vocabulary log-odds of each box or None).
    """
    logit_scale = None if cosine else enc.logit_scale
    phr = texts[:n_phrases]
    minimum = torch.as_tensor(min_score, dtype=torch.float32).expand(n_phrases).clone()  # per phrase
    windows, bound = src.candidate_windows(windows, texts, n_phrases, minimum, max_results, logit_scale)
    all_boxes: list[torch.Tensor] = []
    all_scores: list[torch.Tensor] = []
    all_labels: list[torch.Tensor] = []
    all_zv: list[torch.Tensor] = []
    buffered = 0
    scored = 0
    cap = max(4 * max_results, 200)
    floor = minimum.clone()  # what a new box must reach, per phrase
    # with bounds (a scene index): only the tiles that can still reach the floor, in growing batches
    batches = src.embeddings(windows, dense=True, progress=progress, cancel=cancel) if bound is None else \
        src.candidate_batches(windows, bound, lambda: floor, progress, cancel)
    for eb in batches:
        scored = eb.done if bound is None else scored + len(eb.tiles)  # an index's: tiles pooled
        b = len(eb.tiles)
        sim = scoring.similarity_maps(eb.dense_normalized, phr).cpu()  # [B, N, h, w]
        hot = None
        if bound is not None:  # a scene index: boxes only where a patch can reach the floor
            patch_score = sim if cosine else scoring.probability_maps(eb.dense_normalized, texts, n_phrases,
                                                                      enc.logit_scale).cpu()
            reach = scoring.score_bound(patch_score, probability=not cosine)  # [B, N, h, w]
            hot = (reach >= floor.view(1, -1, 1, 1)).any(dim=1)
        owner, cand, reg, valid, nonempty = pool_candidates(enc, eb, sim.flatten(0, 1), area, hot, sizes)
        if logit_scale is None:
            probs = (reg @ phr.float().T).clamp_min(0.0).cpu()
        else:
            probs = scoring.phrase_probabilities(reg, texts, n_phrases, logit_scale).cpu()
        probs[~(valid & nonempty)] = 0.0
        if sizes is not None:
            probs[~size_fits(cand, sizes)] = 0.0
        # the best PRE_NMS candidates per (tile, phrase) go on to NMS
        probs = keep_top_per_tile(probs, owner, b, PRE_NMS)
        k_idx, p_idx = (probs >= minimum.clamp_min(1e-12).view(1, -1)).nonzero(as_tuple=True)
        if k_idx.numel() == 0:
            continue
        bx, sc = cand[k_idx], probs[k_idx, p_idx]
        # NMS inside the batch keyed by (tile, phrase): cheap and bounds what is buffered
        key = owner[k_idx] * n_phrases + p_idx
        keep = scoring.nms_per_label(bx, sc, key, nms_iou)
        all_boxes.append(bx[keep])
        all_scores.append(sc[keep])
        all_labels.append(p_idx[keep])
        if vocab is not None:
            rows = k_idx[keep]
            zv = scoring.vocabulary_logodds(reg[rows.to(reg.device)], texts, vocab, n_phrases, enc.logit_scale).cpu()
            all_zv.append(zv[torch.arange(len(rows)), p_idx[keep]])
        buffered += int(keep.numel())
        if buffered > _BUFFER_LIMIT:
            bx, sc, lb = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
            keep = scoring.nms_per_label(bx, sc, lb, nms_iou, cap=cap)
            all_boxes, all_scores, all_labels = [bx[keep]], [sc[keep]], [lb[keep]]
            if vocab is not None:
                all_zv = [torch.cat(all_zv)[keep]]
            buffered = int(keep.numel())
        if bound is not None and eb.done < len(windows):
            floor = _floors(all_boxes, all_scores, all_labels, n_phrases, max_results, nms_iou, minimum, floor)
            if bool((bound[eb.done:].amax(dim=0) < floor).all()):
                break  # no tile left can reach the max_results-th box of any phrase
    if not all_boxes:
        empty = torch.zeros((0, 4), dtype=torch.float64), torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return (*empty, scored, None if vocab is None else torch.zeros(0, dtype=torch.float64))
    zv_all = torch.cat(all_zv) if vocab is not None else None
    return torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels), scored, zv_all


def _floors(boxes: list[torch.Tensor], scores: list[torch.Tensor], labels: list[torch.Tensor], n_phrases: int,
            max_results: int, nms_iou: float, minimum: torch.Tensor, now: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Per phrase, what a new box must score to enter the results: the ``max_results``-th best
    score so far (after NMS), or the phrase's ``minimum`` while there are fewer boxes.

    ``now``: the floors before the last boxes came. NMS keeps a box or not by the better boxes only, so
    among the boxes at or above ``now`` it keeps what it keeps among them all: where that leaves
    ``max_results`` boxes for every phrase, the others are not looked at."""
    bx, sc, lb = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    if now is not None:
        high = sc >= now.to(sc.dtype)[lb]
        out = _kth_best(bx[high], sc[high], lb[high], n_phrases, max_results, nms_iou, minimum)
        if out is not None:
            return out
    out = _kth_best(bx, sc, lb, n_phrases, max_results, nms_iou, minimum, partial=False)
    assert out is not None  # partial=False: always a floor
    return out


def _kth_best(bx: torch.Tensor, sc: torch.Tensor, lb: torch.Tensor, n_phrases: int, max_results: int,
              nms_iou: float, minimum: torch.Tensor, partial: bool = True) -> torch.Tensor | None:
    """The floors of :func:`_floors` from these boxes; ``partial``: None when a phrase has fewer than
    ``max_results`` boxes after NMS."""
    keep = scoring.nms_per_label(bx, sc, lb, nms_iou, cap=max_results)
    out = minimum.clone()
    for p in range(n_phrases):
        mine = sc[keep][lb[keep] == p]
        if len(mine) >= max_results:
            out[p] = max(float(minimum[p]), float(mine.min()))
        elif partial:
            return None
    return out
