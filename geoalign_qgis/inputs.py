"""What the analyst types or picks, turned into engine parameters (one place for the dock and
Processing). QGIS's side only: the engine checks everything again with the library's rules.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .protocol import DEFAULT_MODEL, MAX_PHRASES  # the engine's values; the model is shown until it answers


class InputProblem(ValueError):
    """A value the analyst has to fix; the message is one line."""


def split_texts(text: str | None, separators: str = "\n;") -> list[str]:
    """Phrases or classes from a text box: split on ``separators``, single spaces, blanks
    dropped, duplicates dropped ignoring case (first spelling kept, order kept) -- the rule of
    :func:`geoalign_core.data.text.clean_texts`."""
    out: list[str] = []
    seen: set[str] = set()
    for part in re.split(f"[{re.escape(separators)}]+", text or ""):
        p = " ".join(part.split())
        if p and p.lower() not in seen:
            seen.add(p.lower())
            out.append(p)
    return out


def check_phrase_count(phrases: list[str]) -> None:
    """Refuse a list longer than find takes, before anything is sent (the engine refuses it too)."""
    if len(phrases) > MAX_PHRASES:
        raise InputProblem(f"{len(phrases)} phrases: at most {MAX_PHRASES} per run (memory grows with their "
                           "number); split the list into several runs")


def parse_bands(text: str | None) -> list[int] | None:
    """``"3,2,1"`` -> ``[3, 2, 1]``; empty -> None (the raster's colour interpretation)."""
    cleaned = (text or "").replace(" ", "")
    if not cleaned:
        return None
    try:
        return [int(b) for b in cleaned.split(",") if b]
    except ValueError:
        raise InputProblem(f"bands must be 1-based band numbers like 3,2,1, not {cleaned!r}") from None


def raster_path(layer: Any) -> str:
    """The local file behind a QGIS raster layer (the engine reads files)."""
    if layer is None or not layer.isValid():
        raise InputProblem("choose a raster layer")
    if layer.providerType() != "gdal":
        raise InputProblem(f"{layer.name()}: GeoAlign reads raster files; this layer comes from "
                           f"'{layer.providerType()}'")
    path = layer.source().split("|")[0]
    if not Path(path).is_file():
        raise InputProblem(f"{layer.name()}: the source is not a local file ({path})")
    return path


__all__ = ["DEFAULT_MODEL", "MAX_PHRASES", "InputProblem", "check_phrase_count", "parse_bands", "raster_path",
           "split_texts"]
