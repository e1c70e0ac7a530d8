"""GeoAlign's Processing provider (toolbox, batch mode, model builder)."""

from .provider import GeoAlignProvider

__all__ = ["GeoAlignProvider"]
