"""Band selection: which three raster bands become the R, G, B channels of a tile.

Rules for the default selection (no ``--bands`` given), from the colour interpretation
GDAL reports for each band:

* red, green and blue bands present -> those three, in R, G, B order;
* one band (or one band plus alpha) -> that band, replicated to R, G, B;
* two bands that are not grey + alpha -> the first band, replicated;
* three or more bands without an R/G/B colour interpretation -> bands 1, 2, 3
  (e.g. a 5-band multispectral scene: pass ``bands`` to pick others).

An alpha band (colour interpretation ``alpha``) is never an image channel by default; it is
used as a validity mask (alpha 0 = outside), also when ``bands`` is given explicitly.

An explicit selection has one band number (replicated to R, G, B) or three; numbers are
1-based as in GDAL and QGIS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geoalign_core.errors import InputError

if TYPE_CHECKING:  # rasterio only where a raster is opened: parse_bands checks a flag without it
    from rasterio.enums import ColorInterp

__all__ = ["BandSelection", "parse_bands", "select_bands"]


@dataclass(frozen=True)
class BandSelection:
    """Resolved band choice.

    Attributes:
        rgb: three 1-based band numbers feeding channels R, G, B (may repeat).
        alpha: 1-based band number of the alpha band, or None.
    """

    rgb: tuple[int, int, int]
    alpha: int | None = None

    @property
    def read_indexes(self) -> list[int]:
        """The distinct bands to read (selected bands, then alpha), in first-use order."""
        out: list[int] = []
        for b in (*self.rgb, self.alpha):
            if b is not None and b not in out:
                out.append(b)
        return out

    @property
    def is_rgb(self) -> bool:
        """True when the three channels come from three distinct bands."""
        return len(set(self.rgb)) == 3


def parse_bands(text: str | Sequence[int] | None) -> list[int] | None:
    """Parse a ``--bands`` value such as ``"4,3,2"`` or ``"1"`` into 1-based band numbers.

    Accepts None (no selection), a comma/space separated string, or a sequence of ints.
    Raises InputError on anything that is not a list of positive integers.
    """
    if text is None:
        return None
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", ",").split(",") if p]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise InputError(f"bands must be band numbers separated by commas, e.g. 1,2,3; got {text!r}",
                             param="bands") from None
    else:
        try:
            values = [int(v) for v in text]
        except (TypeError, ValueError):
            raise InputError(f"bands must be a list of band numbers; got {text!r}", param="bands") from None
    if not values:
        raise InputError("bands is empty; give one band number or three, e.g. 1,2,3", param="bands")
    return values


def select_bands(
    count: int, colorinterp: Sequence[ColorInterp], bands: str | Sequence[int] | None = None
) -> BandSelection:
    """Resolve the band selection for a raster with ``count`` bands.

    Args:
        count: number of bands in the raster.
        colorinterp: colour interpretation of each band (``dataset.colorinterp``).
        bands: explicit 1-based selection (one band or three), or None for the default rules
            in this module's docstring.

    Raises:
        InputError: a band number out of range, or a selection of neither 1 nor 3 bands.
    """
    from rasterio.enums import ColorInterp

    ci = list(colorinterp)
    alpha = next((i + 1 for i, c in enumerate(ci) if c == ColorInterp.alpha), None)
    values = parse_bands(bands)
    if values is not None:
        bad = [b for b in values if not 1 <= b <= count]
        if bad:
            raise InputError(
                f"bands {','.join(map(str, values))}: the raster has {count} band(s), "
                f"band numbers run from 1 to {count}", param="bands"
            )
        if len(values) == 1:
            return BandSelection((values[0],) * 3, alpha)
        if len(values) == 3:
            return BandSelection((values[0], values[1], values[2]), alpha)
        raise InputError(f"bands takes one band number or three (R,G,B); got {len(values)}", param="bands")

    def find(kind: ColorInterp) -> int | None:
        return next((i + 1 for i, c in enumerate(ci) if c == kind), None)

    r, g, b = find(ColorInterp.red), find(ColorInterp.green), find(ColorInterp.blue)
    if r and g and b:
        return BandSelection((r, g, b), alpha)
    image_bands = [i for i in range(1, count + 1) if i != alpha]
    if not image_bands:  # a lone alpha band: treat it as grey
        return BandSelection((1, 1, 1), None)
    if len(image_bands) < 3:
        first = image_bands[0]
        return BandSelection((first, first, first), alpha)
    return BandSelection((image_bands[0], image_bands[1], image_bands[2]), alpha)
