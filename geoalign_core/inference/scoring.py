"""The scoring pass: everything here works on embeddings only (no raster, no backbone).

Image-side embeddings come from :meth:`geoalign_core.inference.Predictor.image_pass`; text
embeddings from :meth:`~geoalign_core.inference.Predictor.encode_phrases`. All embeddings are
L2-normalised, so dot products are cosine similarities.

Scores
------
* **Tile classification** (:func:`classify`): ``softmax(logit_scale * cos(tile, class))`` over
  the classes: the probability of each class for the tile (CLIP zero-shot classification).
* **Region-phrase score** (:func:`phrase_probabilities`, used by ``find`` and
  ``match-regions``): ``softmax(logit_scale * cos(region, t))`` over the set
  ``T = query phrases + background phrases`` (:data:`~geoalign_core.inference.vocabulary.BACKGROUND_PHRASES`
  minus any that equal a query phrase), read at the query phrase. It is the probability that
  the region shows that phrase rather than another query phrase or generic background
  (grass, road, roof, ...). Scores of one region over all phrases sum to at most 1, so a
  region cannot score high for two different phrases; with a single phrase the background
  set keeps the score meaningful (it is not trivially 1).
* **Heatmap** (:func:`similarity_maps`): the raw cosine similarity between each patch
  embedding and the phrase, in [-1, 1]; no per-tile normalisation, so values are comparable
  across tiles and scenes of one model.

Candidates for ``find`` (:func:`dense_candidates`, :func:`window_candidates`) are boxes in the
tile's input pixels: connected components of the phrase's dense similarity map above several
relative thresholds, and multi-scale sliding windows on the patch grid. All of them are
pooled (RoIAlign) from the SAME dense map as the heatmap: one backbone pass per tile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..box_ops import batched_nms, roi_align

__all__ = [
    "DENSE_THRESHOLDS",
    "LOGIT_BOUND",
    "MIN_VALID_FRACTION",
    "SCORE_BOUND",
    "boxes_touch",
    "WINDOW_SCALES",
    "boxes_valid_fraction",
    "classify",
    "component_boxes",
    "dense_candidates",
    "drop_nested",
    "nms_per_label",
    "patch_validity",
    "phrase_probabilities",
    "score_bound",
    "similarity_maps",
    "vocabulary_logodds",
    "top_k",
    "window_candidates",
]

#: How far a region's score can be above its best patch's (a one-patch region's score,
#: :func:`probability_maps`): a region's embedding averages its patches', so it can beat its best
#: patch, but not by far. Measured with the demo model over ten phrases on the sample scene and a
#: drone image: at most 1.9x the patch's probability where scores are low (99.9 % of tiles), and at
#: most 2.2 higher in log-odds where they are high. A scene index skips tiles and boxes whose
#: patches stay below the threshold under :func:`score_bound`.
SCORE_BOUND = 2.0
#: a candidate box (or a patch) with less valid area than this is ignored
MIN_VALID_FRACTION = 0.5
LOGIT_BOUND = 2.5


def score_bound(patch_score: torch.Tensor, probability: bool = True) -> torch.Tensor:
    """The most a region can score given its best patch's score: ``min(2 p, sigmoid(logit(p) + 2.5))``
    for probabilities, ``2 cos`` for cosine similarities (both at most 1)."""
    if not probability:
        return (SCORE_BOUND * patch_score).clamp(max=1.0)
    p = patch_score.clamp(1e-7, 1 - 1e-7)
    return torch.minimum(SCORE_BOUND * p, torch.sigmoid(torch.logit(p) + LOGIT_BOUND)).clamp(max=1.0)
# relative thresholds on a tile's similarity map: min + q * (max - min)
DENSE_THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.85)
# sliding-window sides, in patches (stride: half a side)
WINDOW_SCALES: tuple[int, ...] = (2, 4, 8)


def classify(images: torch.Tensor, classes: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
    """``[B, D]`` tile embeddings x ``[C, D]`` class embeddings -> ``[B, C]`` probabilities."""
    logits = float(logit_scale) * images.float() @ classes.float().T
    return logits.softmax(dim=-1)


def top_k(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values [B, k'], indices [B, k'])`` with ``k' = min(k, C)``, best first."""
    k = max(1, min(int(k), probs.shape[-1]))
    return probs.topk(k, dim=-1)


def phrase_probabilities(
    regions: torch.Tensor, texts: torch.Tensor, n_phrases: int, logit_scale: float | torch.Tensor
) -> torch.Tensor:
    """Region-phrase scores ``[K, N]``.

    Args:
        regions: ``[K, D]`` region embeddings.
        texts: ``[N + B, D]``: the N query phrases first, then B background phrases.
        n_phrases: N.
        logit_scale: the model's 1/tau.
    """
    logits = float(logit_scale) * regions.float() @ texts.float().T
    return logits.softmax(dim=-1)[:, :n_phrases]


def vocabulary_logodds(regions: torch.Tensor, texts: torch.Tensor, vocab: torch.Tensor, n_phrases: int,
                       logit_scale: float | torch.Tensor) -> torch.Tensor:
    """``[K, N]`` float64 log-odds of each query phrase against EVERY other text: the other queries, the
    background phrases (``texts [N + B, D]``) and the vocabulary (``vocab [V, D]``)."""
    logits = float(logit_scale) * regions.double() @ torch.cat([texts, vocab]).double().T  # [K, N + B + V]
    out = torch.empty((logits.shape[0], n_phrases), dtype=torch.float64, device=logits.device)
    for p in range(n_phrases):
        others = torch.cat([logits[:, :p], logits[:, p + 1:]], dim=1)
        out[:, p] = logits[:, p] - torch.logsumexp(others, dim=1)
    return out


def similarity_maps(dense: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
    """``[B, D, h, w]`` dense embeddings x ``[N, D]`` phrases -> ``[B, N, h, w]`` cosine similarity."""
    return torch.einsum("bdhw,nd->bnhw", dense.float(), phrases.float())


def probability_maps(
    dense: torch.Tensor, texts: torch.Tensor, n_phrases: int, logit_scale: float | torch.Tensor
) -> torch.Tensor:
    """Per-patch phrase scores ``[B, N, h, w]``: every patch scored as a one-patch region.

    ``dense`` is ``[B, D, h, w]`` normalised per patch; ``texts`` and ``n_phrases`` as in
    :func:`phrase_probabilities` (the query phrases, then background phrases), so a patch's
    value is the probability ``find`` would give a region made of that patch alone.
    """
    b, d, h, w = dense.shape
    flat = dense.float().permute(0, 2, 3, 1).reshape(-1, d)
    probs = phrase_probabilities(flat, texts, n_phrases, logit_scale)
    return probs.reshape(b, h, w, n_phrases).permute(0, 3, 1, 2)


def patch_validity(valid: torch.Tensor, patch: int) -> torch.Tensor:
    """Fraction of valid pixels per patch: ``[B, H, W]`` bool -> ``[B, H/p, W/p]`` float."""
    return F.avg_pool2d(valid.float().unsqueeze(1), patch).squeeze(1)


def component_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of the 8-connected components of each boolean map.

    Args:
        masks: ``[M, h, w]`` bool.

    Returns:
        ``(map_index [K], boxes [K, 4])``; boxes are ``x0, y0, x1, y1`` in cells, ``x1``/``y1``
        exclusive (a component of one cell at (r, c) is ``c, r, c + 1, r + 1``).
    """
    from scipy import ndimage

    m, h, w = masks.shape
    if m == 0 or not masks.any():
        return torch.zeros(0, dtype=torch.long), torch.zeros((0, 4))
    # one labelling of the stack, connected within each map only (3 x 3 in the middle slice)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, n = ndimage.label(masks.cpu().numpy(), structure=structure)
    slices = ndimage.find_objects(labels)  # per label, in order of first cell (map, row, col)
    out = np.asarray([(sl[0].start, sl[2].start, sl[1].start, sl[2].stop, sl[1].stop) for sl in slices],
                     dtype=np.int64).reshape(n, 5)
    return torch.from_numpy(out[:, 0]), torch.from_numpy(out[:, 1:]).float()


def dense_candidates(
    sim: torch.Tensor,
    patch: int,
    patch_valid: torch.Tensor | None = None,
    thresholds: Sequence[float] = DENSE_THRESHOLDS,
    upsample: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate boxes from similarity maps.

    Args:
        sim: ``[M, h, w]`` similarity maps (one per tile x phrase).
        patch: patch size in input pixels.
        patch_valid: ``[M, h, w]`` bool: patches that may be part of a component.
        thresholds: relative levels ``q``: a cell is in the mask when
            ``sim >= min + q * (max - min)`` (min/max over the valid cells of its map).
        upsample: bilinear upsampling of the maps before thresholding, for boxes finer than
            a patch (objects smaller than two patches, e.g. cars at 0.3 m with 8 px patches).

    Returns:
        ``(map_index [K], boxes [K, 4])``, boxes in input pixels (xyxy).
    """
    sim = sim.float().cpu()
    m = sim.shape[0]
    if m == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros((0, 4))
    valid = torch.ones_like(sim, dtype=torch.bool) if patch_valid is None else patch_valid.cpu().bool()
    cell: float = patch  # input pixels per map cell
    if upsample > 1:
        sim = F.interpolate(sim.unsqueeze(1), scale_factor=upsample, mode="bilinear", align_corners=False)[:, 0]
        valid = F.interpolate(valid.float().unsqueeze(1), scale_factor=upsample, mode="nearest")[:, 0] > 0.5
        cell = patch / upsample
    lo = torch.where(valid, sim, torch.full_like(sim, float("inf"))).flatten(1).amin(1).view(m, 1, 1)
    hi = torch.where(valid, sim, torch.full_like(sim, float("-inf"))).flatten(1).amax(1).view(m, 1, 1)
    masks = [valid & (sim >= lo + q * (hi - lo)) for q in thresholds]
    idx, boxes = component_boxes(torch.cat(masks, dim=0))
    return idx % m, boxes * cell


def window_candidates(height: int, width: int, patch: int, scales: Sequence[int] = WINDOW_SCALES) -> torch.Tensor:
    """Multi-scale sliding windows on the patch grid of an input of ``height x width`` pixels.

    Each scale ``s`` is a square of ``s`` patches stepped by ``s / 2`` patches, plus the whole
    input. Returns ``[K, 4]`` boxes in input pixels (xyxy).
    """
    gh, gw = height // patch, width // patch
    out = [torch.tensor([[0.0, 0.0, float(width), float(height)]])]
    for s in scales:
        if s > min(gh, gw):
            continue
        step = max(1, s // 2)
        ys = torch.arange(0, gh - s + 1, step)
        xs = torch.arange(0, gw - s + 1, step)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        x0, y0 = xx.reshape(-1).float() * patch, yy.reshape(-1).float() * patch
        out.append(torch.stack([x0, y0, x0 + s * patch, y0 + s * patch], dim=1))
    return torch.cat(out, dim=0)


def boxes_touch(cells: torch.Tensor, boxes: torch.Tensor, patch: int) -> torch.Tensor:
    """Which boxes ``[K, 4]`` (input pixels) overlap at least one True cell of ``cells [h, w]`` (patches)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.bool)
    h, w = cells.shape
    integral = F.pad(cells.long().cumsum(0).cumsum(1), (1, 0, 1, 0))
    b = boxes.float() / patch
    c0 = b[:, 0].floor().long().clamp(0, w)
    r0 = b[:, 1].floor().long().clamp(0, h)
    c1 = b[:, 2].ceil().long().clamp(0, w)
    r1 = b[:, 3].ceil().long().clamp(0, h)
    count = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return count > 0


def boxes_valid_fraction(valid: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fraction of valid pixels inside each box: ``valid [B, H, W]``, boxes per image -> ``[sum K_i]``."""
    if sum(len(b) for b in boxes) == 0:
        return torch.zeros(0)
    v = valid.float().unsqueeze(1)
    pooled = roi_align(v, [b.float() for b in boxes], output_size=(4, 4), spatial_scale=1.0, sampling_ratio=2,
                       aligned=True)
    return pooled.mean(dim=(1, 2, 3))


#: a box lying this much (intersection over the smaller box's area) inside or around a better box of the same
#: phrase is the same object again (a car's box inside the box of the car and its shadow): ``find`` drops it
NESTED_OVERLAP = 0.8
_NESTED_LIMIT = 4000  # boxes per label checked for nesting (the best ones; the pairwise check is quadratic)


def drop_nested(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor,
                overlap: float = NESTED_OVERLAP, cap: int | None = None) -> torch.Tensor:
    """``keep`` (indices, best first) without the boxes that lie ``overlap`` or more inside, or around, a better
    kept box of the same label (intersection over the smaller of the two areas).

    Boxes are taken best first and each is checked against the boxes kept before it only, so with ``cap``
    the check stops once a label has ``cap`` boxes: the result's first ``cap`` boxes per label are the
    same as without it, at a cost that grows with ``cap``, not with the number of boxes."""
    if keep.numel() < 2:
        return keep
    out = []
    kl = labels[keep]
    for lab in kl.unique():
        idx = keep[kl == lab]
        head, tail = idx[:_NESTED_LIMIT], idx[_NESTED_LIMIT:]
        b = boxes[head].double()
        area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).clamp_min(1e-9)
        kept = torch.zeros(len(head), dtype=torch.long)
        n = 0
        for i in range(len(head)):
            if n:
                k = kept[:n]
                lt = torch.maximum(b[k, :2], b[i, :2])
                rb = torch.minimum(b[k, 2:], b[i, 2:])
                inter = (rb - lt).clamp_min(0).prod(dim=1)
                if bool((inter / torch.minimum(area[k], area[i]) >= overlap).any()):
                    continue
            kept[n] = i
            n += 1
            if cap is not None and n >= cap:
                break
        full = cap is not None and n >= cap  # the tail would be cut by the cap anyway
        out.append(head[kept[:n]] if full else torch.cat([head[kept[:n]], tail]))
    keep = torch.cat(out)
    return keep[scores[keep].argsort(descending=True, stable=True)]


def nms_per_label(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float, cap: int | None = None,
    nested: bool = False,
) -> torch.Tensor:
    """Indices kept by non-maximum suppression per label, best first; at most ``cap`` per label. ``nested``:
    also drop boxes nested in or around a better one (:func:`drop_nested`)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    keep = batched_nms(boxes.double(), scores.double(), labels, iou)
    if nested:
        keep = drop_nested(boxes, scores, labels, keep, cap=cap)
    if cap is None:
        return keep
    kept_labels = labels[keep]
    out = []
    for lab in kept_labels.unique():
        out.append(keep[kept_labels == lab][:cap])
    keep = torch.cat(out)
    return keep[scores[keep].argsort(descending=True, stable=True)]
