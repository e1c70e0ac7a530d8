"""Training data: vector labels -> chips + ``samples.jsonl`` (captions, region phrases, hard negatives).

* :mod:`~geoalign_core.data.schema`: the jsonl schema, :func:`read_samples`, :func:`read_image`;
* :mod:`~geoalign_core.data.labels`: labels in any OGR format -> features in the raster's pixel grid;
* :mod:`~geoalign_core.data.chipping`: the chip grid, regions of a chip, class cover of a window;
* :mod:`~geoalign_core.data.captions`: rule-based phrases, descriptions and captions;
* :mod:`~geoalign_core.data.negatives`: rule-based hard negatives;
* :mod:`~geoalign_core.data.prepare`: ``geoalign prepare`` (:func:`prepare_dataset`).

Every name is imported when it is first used: the schema (and with it rasterio) by the readers,
``prepare`` (and with it the OGR vector stack: pyogrio, shapely, pyproj) by ``geoalign prepare``,
so that training, which reads chips and ``samples.jsonl`` only, does not need the vector
libraries, and the commands' parsers (which use :mod:`~geoalign_core.data.text`) need neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from geoalign_core.data.prepare import PrepareOptions, PrepareSummary, prepare_dataset
    from geoalign_core.data.schema import (
        CHIPS_DIR,
        DATASET_FILE,
        SAMPLES_FILE,
        read_image,
        read_samples,
        resolve_samples_path,
    )

_SCHEMA = {"CHIPS_DIR", "DATASET_FILE", "SAMPLES_FILE", "read_image", "read_samples", "resolve_samples_path"}
_PREPARE = {"PrepareOptions", "PrepareSummary", "prepare_dataset"}


__getattr__ = lazy_names(__name__, {"schema": _SCHEMA, "prepare": _PREPARE})

__all__ = [
    "CHIPS_DIR",
    "DATASET_FILE",
    "SAMPLES_FILE",
    "PrepareOptions",
    "PrepareSummary",
    "prepare_dataset",
    "read_image",
    "read_samples",
    "resolve_samples_path",
]
