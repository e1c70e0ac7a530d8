"""Find objects by text: candidate boxes from each tile's dense embeddings, scored, de-duplicated,
and placed better at twice the zoom.

:func:`find` is the task. Its steps are separate functions so that the candidates can be
scored from stored embeddings too: :func:`find_candidates` (an image pass, then
:func:`score_candidates` per batch), :func:`refine_boxes` (a second look at each kept box).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from os import PathLike

import geopandas as gpd
import numpy as np
import shapely
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from ..card import phrase_object_size
from ..defaults import DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE, DEFAULT_NMS_IOU, REFINE_MAX_BOXES
from ..errors import InputError
from ..geo import pixel_boxes_to_polygons
from ..geo.grid import area_window
from . import scoring
from .encoder import Cancel, EmbeddingBatch, Encoder, Progress, Stage, enter_stage, tile_scale
from .metadata import raster_meta, run_metadata
from .regions import centres_in, load_regions, load_within, pd_strings
from .source import EmbeddingSource, LiveSource, open_source

__all__ = ["find", "find_candidates", "keep_top_per_tile", "object_sizes", "pool_candidates", "refine_boxes",
           "refine_selection", "score_candidates", "size_fits", "sized_windows"]

MIN_VALID_FRACTION = 0.5  # candidates / patches with less valid area are ignored
PRE_NMS = 64  # candidates per (tile, phrase) considered for NMS
# the box refinement: each kept box is looked at again at twice the tile zoom (a window of half
# the tile size around it, resampled to the model's input) for a better placed box
REFINE_ZOOM = 2
REFINE_MIN_AREA = 0.5  # a refined box keeps at least this share of the original box's area
REFINE_SPARE = 20  # boxes kept for refinement beyond max_results per phrase (NMS may merge refined boxes)
_BUFFER_LIMIT = 20_000
# a known object size (``object_size``, or a fine-tuned model's labelled sizes): candidates of that
# size are added, and a phrase keeps only boxes whose area is within this factor of it
SIZE_RANGE = 2.5


def find(
    enc: Encoder,
    raster: str | PathLike,
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
    refine: bool = True,
    regions_layer: str | int | None = None,
    buffer: float | None = None,
    within: str | PathLike | gpd.GeoDataFrame | None = None,
    within_layer: str | int | None = None,
    object_size: float | Sequence[float] | None = None,
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
    (``regions``, by contrast, makes each feature's box *the* candidate.)

    ``refine`` (without ``regions``): the best :data:`REFINE_MAX_BOXES` kept boxes per phrase
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
    classes ("red car" -> "car"). For a phrase
    with a size, windows of that size (stepped by a quarter of it) join the candidates, only
    boxes within :data:`SIZE_RANGE` x of its area are kept, and its boxes are not refined.

    ``score``: the estimated probability that the box shows the phrase (:mod:`.calibration`: the
    model card's map of the box's evidence against its competitors and the scene); ``min_score``
    applies to it. A model without a calibration gives ``standout`` instead of ``score``.

    Rows: ``geometry`` (box), ``phrase``, ``score`` (or ``standout``), ``rank`` (1 = best, per phrase).
    ``attrs["score_features"]``: the :data:`~.calibration.FEATURES` of each row (for fitting a calibration).
    """
    phrases = enc.clean(phrases)
    if not 0.0 <= float(min_score) <= 1.0:
        raise InputError(f"min score must be in [0, 1]; got {min_score}", param="min_score")
    if int(max_results) < 1:
        raise InputError(f"max results must be at least 1; got {max_results}", param="max_results")
    unknown = [bool(enc.unknown_words(p)) for p in phrases]
    with open_source(enc, raster, bands, allow_no_crs, phrases=phrases) as src:
        ts, overlap = src.tile_size(tile_size), src.overlap(overlap, 0.25)
        area = area_window(src.transform, src.width, src.height, bounds, src.path)
        extra: dict[str, object] = {}
        if regions is not None:
            feats, rboxes, n_out = load_regions(regions, src, area, regions_layer, buffer)
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
                zone, n_within = load_within(within, src, area, within_layer, buffer)
                windows = [w for w in windows if zone.intersects(shapely.box(
                    w.col_off, w.row_off, w.col_off + w.width, w.row_off + w.height))]
                extra |= {"within": str(within) if not isinstance(within, gpd.GeoDataFrame) else "GeoDataFrame",
                          "n_within": n_within}
            enter_stage(stage, "scanning tiles")
            cal = src.calibration(area, ts, overlap, texts, len(phrases), cancel).for_phrases(
                enc, phrases, src.out_of_domain)
            sizes, size_meta = object_sizes(enc, phrases, object_size, src, ts)
            boxes, scores, p_idx, n_scanned, zv = find_candidates(
                enc, src, windows, area, texts, len(phrases), cal.raw_threshold(float(min_score)),
                int(max_results), float(nms_iou), progress, cancel, sizes=sizes, vocab=vocab,
            )
            if size_meta:
                extra["object_sizes_m"] = size_meta
            if zone is not None:
                inside = centres_in(zone, boxes)
                boxes, scores, p_idx, zv = boxes[inside], scores[inside], p_idx[inside], zv[inside]
            if refine:
                keep = scoring.nms_per_label(boxes, scores, p_idx, float(nms_iou),
                                             cap=int(max_results) + min(int(max_results), REFINE_SPARE))
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
            extra |= {"nested_overlap": scoring.NESTED_OVERLAP, "n_windows": len(windows),
                      "n_windows_scored": n_scanned, "nms_iou": float(nms_iou),
                      "refine": bool(refine),
                     "dense_thresholds": list(scoring.DENSE_THRESHOLDS),
                     "window_scales_patches": list(scoring.WINDOW_SCALES)}
        boxes, raw, p_idx, zv = boxes[keep], scores[keep], p_idx[keep], zv[keep]
        scores = cal.score(raw, p_idx, zv)
        feats = cal.features(raw, p_idx, zv)
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
    return gdf



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
                                                                      logit_scale).cpu()
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
            zv = scoring.vocabulary_logodds(reg[rows.to(reg.device)], texts, vocab, n_phrases, logit_scale).cpu()
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
            floor = _floors(all_boxes, all_scores, all_labels, n_phrases, max_results, nms_iou, minimum)
            if bool((bound[eb.done:].amax(dim=0) < floor).all()):
                break  # no tile left can reach the max_results-th box of any phrase
    if not all_boxes:
        empty = torch.zeros((0, 4), dtype=torch.float64), torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return (*empty, scored, None if vocab is None else torch.zeros(0, dtype=torch.float64))
    zv_all = torch.cat(all_zv) if vocab is not None else None
    return torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels), scored, zv_all


def _floors(boxes: list[torch.Tensor], scores: list[torch.Tensor], labels: list[torch.Tensor], n_phrases: int,
            max_results: int, nms_iou: float, minimum: torch.Tensor) -> torch.Tensor:
    """Per phrase, what a new box must score to enter the results: the ``max_results``-th best
    score so far (after NMS), or the phrase's ``minimum`` while there are fewer boxes."""
    bx, sc, lb = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = scoring.nms_per_label(bx, sc, lb, nms_iou, cap=max_results)
    out = minimum.clone()
    for p in range(n_phrases):
        mine = sc[keep][lb[keep] == p]
        if len(mine) >= max_results:
            out[p] = max(float(minimum[p]), float(mine.min()))
    return out


def score_candidates(
    enc: Encoder, eb: EmbeddingBatch, sim: torch.Tensor, area: Window, texts: torch.Tensor, n_phrases: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`pool_candidates`, each candidate scored against the phrases
    (:func:`scoring.phrase_probabilities`: ``texts`` = the ``n_phrases`` query phrases, then
    background phrases). Returns ``owner, boxes, probs [K, n_phrases], valid, nonempty``."""
    owner, cand, reg, valid, nonempty = pool_candidates(enc, eb, sim, area)
    probs = scoring.phrase_probabilities(reg, texts, n_phrases, enc.logit_scale).cpu()
    return owner, cand, probs, valid, nonempty


def pool_candidates(
    enc: Encoder, eb: EmbeddingBatch, sim: torch.Tensor, area: Window, hot: torch.Tensor | None = None,
    sizes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate boxes of a batch of tiles and their embeddings, pooled from the tiles' dense maps.

    Candidates per tile: the window grid (:func:`scoring.window_candidates`) plus the
    components of the tile's similarity maps at patch and half-patch resolution.

    Args:
        eb: the batch (dense maps, validity, tiles).
        sim: ``[B * m, h, w]`` similarity maps, ``m`` consecutive maps per tile (one per query).
        area: the search area (raster pixels): boxes are clamped to it.
        hot: optional bool ``[B, h, w]``: only boxes over at least one hot patch are pooled (a
            scene index marks the patches whose score can reach the threshold; see
            :func:`scoring.score_bound`).
        sizes: optional ``[N, 2]`` raster-pixel object sizes (NaN rows skipped): windows of each
            size, stepped by a quarter of it, join every tile's candidates.

    Returns:
        ``owner [K]`` (tile of each candidate, in batch order), ``boxes [K, 4]`` (raster
        pixels, float64, clamped to ``area``), ``embeddings [K, D]`` (normalised), ``valid [K]``
        (enough valid pixels inside) and ``nonempty [K]`` (at least 1 px wide and high after
        clamping).
    """
    patch, size = enc.model.patch_size, enc.input_size
    b = len(eb.tiles)
    per_map = sim.shape[0] // b
    pvalid = (scoring.patch_validity(eb.valid, patch) >= MIN_VALID_FRACTION).repeat_interleave(per_map, dim=0)
    midx, dboxes = scoring.dense_candidates(sim, patch, pvalid)
    # the same maps at half-patch resolution: tighter boxes around small objects
    midx2, dboxes2 = scoring.dense_candidates(sim, patch, pvalid, upsample=2)
    midx, dboxes = torch.cat([midx, midx2]), torch.cat([dboxes, dboxes2])
    tile_of = midx // per_map
    grid_boxes = scoring.window_candidates(size, size, patch)
    per_tile = [torch.unique(torch.cat([grid_boxes, dboxes[tile_of == i],
                                        *sized_windows(sizes, tile_scale(eb.tiles[i]), size)], dim=0), dim=0)
                for i in range(b)]
    if hot is not None:
        per_tile = [c[scoring.boxes_touch(hot[i], c, patch)] for i, c in enumerate(per_tile)]
    valid = scoring.boxes_valid_fraction(eb.valid, per_tile) >= MIN_VALID_FRACTION
    with torch.no_grad():
        reg = F.normalize(enc.model.pool_regions(eb.dense, per_tile).float(), dim=-1)
    # map to raster pixels
    owner = torch.cat([torch.full((len(c),), i) for i, c in enumerate(per_tile)])
    cand = torch.cat(per_tile).double()
    offs = torch.tensor([[t.window.col_off, t.window.row_off] for t in eb.tiles], dtype=torch.float64)
    scl = torch.tensor([tile_scale(t) for t in eb.tiles], dtype=torch.float64)
    cand = cand * scl[owner, None] + offs[owner].repeat(1, 2)
    a_x0, a_y0 = float(area.col_off), float(area.row_off)
    cand[:, 0::2] = cand[:, 0::2].clamp(a_x0, a_x0 + float(area.width))
    cand[:, 1::2] = cand[:, 1::2].clamp(a_y0, a_y0 + float(area.height))
    nonempty = ((cand[:, 2] - cand[:, 0]) >= 1) & ((cand[:, 3] - cand[:, 1]) >= 1)
    return owner, cand, reg, valid, nonempty


def object_sizes(enc: Encoder, phrases: Sequence[str], object_size: float | Sequence[float] | None,
                 src: EmbeddingSource, tile_px: float | None = None
                 ) -> tuple[torch.Tensor | None, dict[str, list[float]]]:
    """Per phrase, the object size in raster pixels (``[N, 2]`` width, height; NaN: unknown) and in
    metres for the run metadata: ``object_size`` (metres; a side or width, height) for every
    phrase, else the model's labelled sizes (``spec.extra["object_sizes"]``) or its card's typical
    sizes for the classes the phrases name. A stored size larger than a tile (``tile_px`` raster
    pixels) is not used: such objects are found by their parts."""
    from ..geo.grid import pixel_size_m

    if object_size is not None:
        vals = [float(v) for v in np.atleast_1d(np.asarray(object_size, dtype=np.float64))]
        if len(vals) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in vals):
            raise InputError(f"object size must be one or two positive numbers (metres); got {object_size!r}",
                             param="object_size")
        known = {p: (vals[0], vals[-1]) for p in phrases}
    else:
        stored = (getattr(getattr(enc.model, "spec", None), "extra", None) or {}).get("object_sizes") or {}
        card = enc.card
        known = {}
        for p in phrases:
            hit = phrase_object_size(p, stored) or (card.object_size(p) if card is not None else None)
            if hit is not None:
                known[p] = hit
    mx, my = pixel_size_m(src.crs, src.transform, src.width, src.height)
    if object_size is None and tile_px is not None:
        known = {p: wh for p, wh in known.items() if max(wh[0] / mx, wh[1] / my) <= tile_px}
    if not known:
        return None, {}
    out = torch.full((len(phrases), 2), float("nan"), dtype=torch.float64)
    for i, p in enumerate(phrases):
        if p in known:
            out[i, 0], out[i, 1] = known[p][0] / mx, known[p][1] / my
    return out, {p: [round(w, 3), round(h, 3)] for p, (w, h) in known.items()}


def sized_windows(sizes: torch.Tensor | None, scale: float, input_size: int) -> list[torch.Tensor]:
    """Windows of each known size (``sizes [N, 2]`` raster pixels; a tile at ``scale`` raster
    pixels per input pixel), stepped by a quarter of the size, in input pixels."""
    if sizes is None:
        return []
    out = []
    for w, h in {(float(w), float(h)) for w, h in sizes.tolist() if not math.isnan(w)}:
        wi, hi = min(w / scale, input_size), min(h / scale, input_size)
        if wi < 2 or hi < 2:
            continue
        xs = torch.arange(0.0, input_size - wi + 1e-6, max(1.0, wi / 4))
        ys = torch.arange(0.0, input_size - hi + 1e-6, max(1.0, hi / 4))
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        x0, y0 = xx.reshape(-1), yy.reshape(-1)
        out.append(torch.stack([x0, y0, x0 + wi, y0 + hi], dim=1))
    return out


def size_fits(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``[K, N]``: whether each raster-pixel box's area is within :data:`SIZE_RANGE` x of each
    phrase's object size (True for phrases of unknown size)."""
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).double()[:, None]
    want = (sizes[:, 0] * sizes[:, 1])[None, :]
    ok = (area >= want / SIZE_RANGE) & (area <= want * SIZE_RANGE)
    return ok | torch.isnan(want)


def refine_selection(scores: torch.Tensor, labels: torch.Tensor, eligible: torch.Tensor, cap: int) -> torch.Tensor:
    """``[K]`` bool: the boxes to refine: per label, the ``cap`` best-scoring ``eligible`` boxes (ties: the
    earlier box first)."""
    pick = torch.zeros(len(scores), dtype=torch.bool)
    for lab in labels[eligible].unique():
        rows = torch.nonzero(eligible & (labels == lab), as_tuple=True)[0]
        order = scores[rows].double().argsort(descending=True, stable=True)
        pick[rows[order[: max(0, int(cap))]]] = True
    return pick


def refine_boxes(
    enc: Encoder,
    src: LiveSource,
    area: Window,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    texts: torch.Tensor,
    n_phrases: int,
    tile_size: int,
    overlap: float,
    cancel: Cancel | None,
    progress: Progress | None = None,
    stage: Stage | None = None,
) -> tuple[torch.Tensor, int]:
    """Place each box better by looking at it at twice the tile zoom.

    A box found on the patch grid of a tile is placed to within a patch; objects of one or
    two patches (cars at 0.3 m with 8 px patches) then get boxes that are shifted or the
    wrong shape. For each box: a window of half the tile size centred on it is resampled
    to the model's input (twice the zoom, so patches of half the size), the candidates of
    :func:`find_candidates` are scored there for the box's phrase, and the best one whose
    centre lies in the box and whose area is at least ``REFINE_MIN_AREA`` of the box's is
    proposed (the area bound keeps a part of a large object from replacing it). The
    proposal replaces the box only if, pooled at the tile zoom like every ``find``
    candidate, it scores at least as high as the box.

    Args:
        boxes: ``[K, 4]`` raster-pixel boxes (float64); labels: ``[K]`` phrase indexes.

    Returns:
        ``(boxes [K, 4], number of boxes moved)``.
    """
    if len(boxes) == 0:
        return boxes, 0
    enter_stage(stage, "refining boxes")
    side = max(enc.model.patch_size, round(tile_size / REFINE_ZOOM))
    orig = boxes.numpy()
    cx, cy = (orig[:, 0] + orig[:, 2]) / 2, (orig[:, 1] + orig[:, 3]) / 2
    windows = [Window(math.floor(x - side / 2), math.floor(y - side / 2), side, side) for x, y in zip(cx, cy)]
    proposed = orig.copy()
    for eb in src.embeddings(windows, dense=True, progress=progress, cancel=cancel, skip_empty=False):
        rows = torch.tensor([t.index for t in eb.tiles])
        lab = labels[rows]
        # the similarity map of each window's own phrase
        sim = torch.einsum("bdhw,bd->bhw", eb.dense_normalized.float(), texts[lab.to(texts.device)].float()).cpu()
        owner, cand, probs, valid, _ = score_candidates(enc, eb, sim, area, texts, n_phrases)
        score = probs[torch.arange(len(owner)), lab[owner]]
        score[~valid] = -1.0
        c_area = (cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1])
        ccx, ccy = (cand[:, 0] + cand[:, 2]) / 2, (cand[:, 1] + cand[:, 3]) / 2
        for i, k in enumerate(rows.tolist()):
            x0, y0, x1, y1 = orig[k]
            ok = ((owner == i) & (ccx >= x0) & (ccx <= x1) & (ccy >= y0) & (ccy <= y1)
                  & (c_area >= REFINE_MIN_AREA * (x1 - x0) * (y1 - y0)) & (score >= 0))
            if bool(ok.any()):
                j = int(torch.where(ok, score, torch.full_like(score, -2.0)).argmax())
                proposed[k] = cand[j].numpy()
    moved = np.flatnonzero(np.abs(proposed - orig).max(axis=1) > 1e-6)
    if len(moved) == 0:
        return boxes, 0
    # the check at the tile zoom: the proposal must score at least as high as the box
    both = np.concatenate([orig[moved], proposed[moved]])
    enter_stage(stage, "checking refined boxes")
    emb = src.region_embeddings(both, area, tile_size, overlap, progress, cancel)
    probs = scoring.phrase_probabilities(emb, texts, n_phrases, enc.logit_scale).cpu()
    lab = labels[torch.from_numpy(moved)]
    n = len(moved)
    before = probs[torch.arange(n), lab]
    after = probs[torch.arange(n, 2 * n), lab]
    accept = moved[(after >= before).numpy()]
    out = orig.copy()
    out[accept] = proposed[accept]
    return torch.from_numpy(out), int(len(accept))


def keep_top_per_tile(probs: torch.Tensor, owner: torch.Tensor, n_tiles: int, k: int) -> torch.Tensor:
    """Zero all but the ``k`` best scores per (tile, phrase) column of ``probs [K, N]``."""
    out = torch.zeros_like(probs)
    for i in range(n_tiles):
        rows = (owner == i).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            continue
        sub = probs[rows]
        kk = min(k, sub.shape[0])
        vals, idx = sub.topk(kk, dim=0)
        out[rows[idx], torch.arange(sub.shape[1]).expand(kk, -1)] = vals
    return out
