"""User-facing errors.

Every error a user can cause derives from :class:`GeoAlignError`; its message is one line.
The CLI prints it as ``error: <message>`` and exits with status 2; the QGIS plugin shows
it in the message bar. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class GeoAlignError(Exception):
    """Base class of errors caused by user input or the environment (one-line message).

    ``code`` optionally names the kind of problem for programs that react to it (the QGIS
    plugin offers its own remedy for ``"no_crs"``); the message stays the user's text.

    ``param`` names the parameter at fault (``"bands"``, ``"overwrite"``, ...). Library
    messages name parameters, never command-line flags: the ``geoalign`` CLI adds its flag
    (:func:`geoalign_core.cli.flag_hint`), the QGIS plugin its own wording.
    """

    def __init__(self, *args: object, code: str | None = None, param: str | None = None) -> None:
        super().__init__(*args)
        self.code = code
        self.param = param


class GeoAlignWarning(UserWarning):
    """A warning about a parameter (``param``); the CLI adds its flag as for errors."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InputError(GeoAlignError):
    """Bad user input: a missing or unreadable file, a bad parameter, an existing output."""


class ModelError(GeoAlignError):
    """A model cannot be built or used as asked (unknown name, unsupported architecture)."""


class CheckpointError(ModelError):
    """A checkpoint file is missing, unreadable, or does not fit the architecture."""


class OfflineError(ModelError):
    """Weights are not cached and the hub cannot be reached."""


class IndexMismatch(GeoAlignError):
    """A scene index does not belong to this model or raster (another model, a changed raster)."""


class Cancelled(GeoAlignError):
    """A run was cancelled by its ``cancel`` callback (nothing was written)."""
