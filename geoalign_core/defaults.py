"""Default values shared by the library, the ``geoalign`` CLI, the engine and the QGIS plugin (one home each).

No imports here: the CLI builds its parser and ``--help`` from these without loading the model
stack, and the QGIS plugin's zip ships this module (with :mod:`.params` and the engine protocol).
"""

DEFAULT_MODEL = "geoalign-demo"  #: the bundled model
#: tiles per backbone pass on a CPU (API, CLI, engine, plugin); a GPU's is chosen for its memory
DEFAULT_BATCH_SIZE = 16
DEFAULT_OVERLAP = 0.25  #: overlap of neighbouring tiles (find, match-regions, heatmap, similar, an index)
DEFAULT_TILE_OVERLAP = 0.0  #: tile-classify: tiles side by side, a partition of the raster
DEFAULT_TOP_K = 3  #: tile-classify: classes kept per tile
DEFAULT_MIN_SCORE = 0.5  #: find: boxes scoring below this are dropped (0.5: probably right)
DEFAULT_MAX_RESULTS = 100  #: find, similar: best boxes kept per phrase
#: find: phrases per run at most. Every phrase has a score map per tile and its own candidates, so memory
#: grows with their number (2,000 pasted phrases took an engine past 17 GB; 200 on the 2048 px sample scene
#: peak at 1.3 GB resident, CLI find --no-refine); a longer list is refused
#: with a one-line error (split it into several runs) by the CLI, the engine and the plugin alike
MAX_PHRASES = 200
#: find: at most this many boxes per phrase are refined (the best; the rest stay as found), so the
#: refinement's cost does not grow with max_results (the default 100 + 20 spare all fit)
REFINE_MAX_BOXES = 120
DEFAULT_NMS_IOU = 0.5  #: find, similar: a box overlapping a better one by more than this is dropped
DEFAULT_SIMILAR_MIN_SCORE = 0.5  #: similar: regions scoring below this are dropped
DEFAULT_TEXT_WEIGHT = 1.0  #: similar: weight of the phrase's embedding added to the examples'
MAX_WORKERS = 64  #: tile readers: more than this is a typo, not a machine
DEFAULT_CHIP_SIZE = 112  #: prepare: chip side in pixels (the bundled model's input size)
