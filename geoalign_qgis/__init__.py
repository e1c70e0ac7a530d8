"""GeoAlign QGIS plugin: find objects in imagery by text (GeoAlignCLIP).

QGIS imports this package at start-up and calls :func:`classFactory`. Nothing here imports
torch or geoalign_core: the plugin must load (and say what to install) without them.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import GeoAlignPlugin

    return GeoAlignPlugin(iface)
