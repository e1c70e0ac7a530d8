"""Evaluation of GeoAlign models: ``geoalign eval scene | regions | retrieval | hard-negatives | tiles``.

* :mod:`~geoalign_core.evaluation.metrics`: model-free metric code (top-k, recall@k, hard-negative accuracy);
* :mod:`~geoalign_core.evaluation.common`: prompt templates, batched encoding, tables, JSON output;
* :mod:`~geoalign_core.evaluation.tasks`: the five evaluations.
"""

from geoalign_core.evaluation.common import DEFAULT_TEMPLATES, class_embeddings, load_templates
from geoalign_core.evaluation.metrics import hard_negative_accuracy, per_class_accuracy, recall_at_k, topk_accuracy
from geoalign_core.evaluation.tasks import (
    eval_hard_negatives,
    eval_regions,
    eval_retrieval,
    eval_scene,
    eval_tiles,
    load_scene_dataset,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "class_embeddings",
    "eval_hard_negatives",
    "eval_regions",
    "eval_retrieval",
    "eval_scene",
    "eval_tiles",
    "hard_negative_accuracy",
    "load_scene_dataset",
    "load_templates",
    "per_class_accuracy",
    "recall_at_k",
    "topk_accuracy",
]
