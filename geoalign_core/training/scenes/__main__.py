"""``python -m geoalign_core.training.scenes``: see ``geoalign_core.training.scenes.cli``."""

import sys

from .cli import main

sys.exit(main())
