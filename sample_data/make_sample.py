#!/usr/bin/env python3
"""Write the synthetic sample scene (or other seeds): a thin wrapper around ``geoalign_core.training.scenes``.

    python sample_data/make_sample.py --seed 0 --size 2048 --out sample_data
        -> sample_data/scene.tif + sample_data/labels.gpkg
    python sample_data/make_sample.py --seed 1000 --count 10 --size 1024 --out /tmp/train
        -> scene_1000.tif + scene_1000_labels.gpkg, ..., scene_1009...

The generator itself (layout, labels, rendering, file writing) is the package
``geoalign_core/training/scenes/``; from Python use
``from geoalign_core.training.scenes import render_scene, write_scene``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # run from a checkout without `pip install -e .`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from geoalign_core.training.scenes import main

    sys.exit(main())
