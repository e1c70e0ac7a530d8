"""The fine-tuning's forgetting control: a reference scene the model never trains on, and weight interpolation.

A generated scene (held-out seed :data:`REFERENCE_SEED`) is prepared at the model's chip size; its
region top-1 before and after fine-tuning measures what the model forgot. The fine-tuned weights
are blended with the start's (WiSE-FT, :func:`keep_knowledge`) by the largest share that keeps the
reference top-1 within :data:`FORGET_TOLERANCE` of the start's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

__all__ = ["ALPHAS", "FORGET_TOLERANCE", "REFERENCE_SEED", "REFERENCE_SIZE", "keep_knowledge", "load_eval",
           "reference_samples", "reference_top1"]

REFERENCE_SEED, REFERENCE_SIZE = 2000, 768  #: the generated scene that measures forgetting (a held-out seed)


def reference_samples(out: Path, chip: int, quiet: bool) -> tuple[Path, list[str]]:
    """A generated scene the model never trains on (held-out seed :data:`REFERENCE_SEED`) prepared at
    the model's chip size: its region top-1 before and after fine-tuning measures forgetting."""
    from geoalign_core.data import PrepareOptions, prepare_dataset

    from .scenes import write_scene

    d = out / "reference"
    tif, gpkg = write_scene(d / "scene", REFERENCE_SEED, size=REFERENCE_SIZE)
    summary = prepare_dataset(tif, gpkg, d / "data", PrepareOptions(class_field="class", chip_size=chip, background=0),
                              overwrite=True, progress=not quiet)
    return d / "data" / "samples.jsonl", sorted(summary.class_counts)


def load_eval(model_ref: str, device: str):
    from geoalign_core import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_model(model_ref, device=device).eval()


def reference_top1(model, ref: Path, classes: list[str], batch_size: int = 16) -> float:
    """Region top-1 of ``model`` on the reference scene's samples ``ref``."""
    from geoalign_core.evaluation.tasks import eval_regions

    with torch.no_grad():
        res = eval_regions(model, str(ref), classes=classes, batch_size=batch_size, progress=False)
    return float(res["metrics"]["top1"])


ALPHAS = (1.0, 0.75, 0.5, 0.25)  #: fine-tuned weight shares tried, largest first
FORGET_TOLERANCE = 0.05  #: reference top-1 may fall this much below the start's


def keep_knowledge(start_model, trained: Path, final: Path, ref: Path, ref_classes: list[str], start_ref: float,
                    alpha: float | None, device: str, object_sizes: dict | None = None
                    ) -> tuple[float, list[tuple[float, float]]]:
    """Weight-space interpolation with the start (WiSE-FT): ``alpha * fine-tuned + (1 - alpha) * start``.

    ``alpha`` None: the largest of :data:`ALPHAS` whose reference top-1 stays within
    :data:`FORGET_TOLERANCE` of the start's (else the one that keeps the most); the held-out
    part of the user's labels is not looked at, so the report's "after" stays unbiased.
    Writes ``final`` (with ``object_sizes``, per class width and height in metres, in its spec
    for ``find``); returns the chosen alpha and (alpha, reference top-1) of each tried.
    """
    from geoalign_core import save_model

    start_sd = start_model.clip.state_dict()
    tuned = load_eval(str(trained), device)
    tuned_sd = {k: v.clone() for k, v in tuned.clip.state_dict().items()}

    def blend(a: float) -> None:
        tuned.clip.load_state_dict({
            k: a * v + (1 - a) * start_sd[k].to(v.dtype)
            if v.is_floating_point() and k in start_sd and start_sd[k].shape == v.shape else v
            for k, v in tuned_sd.items()})

    tried: list[tuple[float, float]] = []
    chosen = None
    for a in ([float(alpha)] if alpha is not None else list(ALPHAS)):
        blend(a)
        tried.append((a, reference_top1(tuned, ref, ref_classes)))
        if alpha is not None or tried[-1][1] >= start_ref - FORGET_TOLERANCE:
            chosen = a
            break
    if chosen is None:  # none kept within the tolerance: the one that kept the most
        chosen = max(tried, key=lambda t: t[1])[0]
        blend(chosen)
    if object_sizes:
        tuned.spec.extra = {**(tuned.spec.extra or {}), "object_sizes": object_sizes}
    save_model(tuned, final)
    return chosen, tried
