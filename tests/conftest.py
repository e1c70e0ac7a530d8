"""Shared test set-up.

The QGIS plugin runs its model in the GeoAlign engine process; the tests point it at this
interpreter (the project's .venv, where geoalign_core is installed), as an administrator
would with ``GEOALIGN_ENGINE_PYTHON``. QGIS's own offscreen process in the plugin tests
therefore still never imports the model stack for the plugin's sake.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GEOALIGN_ENGINE_PYTHON", sys.executable)
