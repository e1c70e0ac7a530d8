"""The GeoAlign engine: a long-lived worker process that runs GeoAlign for another program.

The QGIS plugin never imports torch, open_clip, rasterio, geopandas, shapely or pyproj into
QGIS's own process (their bundled LLVM, GEOS, PROJ and GDAL collide with the libraries QGIS
links and crash it). It starts ``python -m geoalign_core.engine`` from a separate Python
environment instead, keeps it alive (models stay loaded between requests), and exchanges
JSON lines with it over stdin / stdout; results come back as files.

* :mod:`.protocol`: the messages (standard library only);
* :mod:`.server`: the process (reader, job thread, cancel, events);
* :mod:`.jobs`: what each request does -- the CLI's runs (:mod:`geoalign_core.inference.runs`).

The protocol is described in ``docs/engine_protocol.md``.
"""

from .protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
