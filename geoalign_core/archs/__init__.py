"""Architecture configs GeoAlign adds to open_clip (registered on import).

``GeoAlign-Tiny``: a 4-layer ViT (patch 8, 112 px, width 128) with a 4-layer text tower
(width 128) and a 128-d joint space. About 8 M parameters (6.3 M of them the token
embedding); a forward pass on a 224 px image takes a few milliseconds on a CPU. It is the
architecture of the bundled ``geoalign-demo`` model and of the tests.
"""

from __future__ import annotations

from pathlib import Path

import open_clip

ARCH_DIR = Path(__file__).parent
TINY = "GeoAlign-Tiny"


def register() -> None:
    if TINY not in open_clip.list_models():
        open_clip.add_model_config(ARCH_DIR)


register()
