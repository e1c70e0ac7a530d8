"""The engine protocol as geoalign_core defines it: its version, the defaults, each task's parameters.

One module, not copies: :mod:`geoalign_core.engine.protocol` with the two modules it imports
(:mod:`geoalign_core.params`, :mod:`geoalign_core.defaults`) -- standard library only -- ships in
the plugin's zip as ``geoalign_qgis/core/`` (``package.py``); a source checkout imports
geoalign_core itself. Everything else of geoalign_core stays out of QGIS's process.
"""

from __future__ import annotations

try:  # the plugin zip
    from .core.engine import protocol
except ImportError:  # a source checkout (the tests, a development install)
    from geoalign_core.engine import protocol

PROTOCOL_VERSION = protocol.PROTOCOL_VERSION
ABSOLUTE_PATHS = protocol.ABSOLUTE_PATHS
DEFAULT_MODEL = protocol.DEFAULT_MODEL
DEFAULT_MIN_SCORE = protocol.DEFAULT_MIN_SCORE
DEFAULT_BATCH_SIZE = protocol.DEFAULT_BATCH_SIZE
MAX_PHRASES = protocol.MAX_PHRASES  # find's limit per run (memory grows with the phrases)
PARAMS = protocol.PARAMS
BadRequest = protocol.BadRequest
check_params = protocol.check_params
remove_outputs = protocol.remove_outputs

__all__ = ["ABSOLUTE_PATHS", "DEFAULT_BATCH_SIZE", "DEFAULT_MIN_SCORE", "DEFAULT_MODEL", "MAX_PHRASES", "PARAMS",
           "PROTOCOL_VERSION", "BadRequest", "check_params", "protocol", "remove_outputs"]
