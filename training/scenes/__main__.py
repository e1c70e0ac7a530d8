"""``python -m training.scenes``: see ``training.scenes.cli``."""

import sys

from .cli import main

sys.exit(main())
