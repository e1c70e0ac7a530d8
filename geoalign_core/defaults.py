"""Default values shared by the library, the ``geoalign`` CLI and the engine (one home each).

No imports here: the CLI builds its parser and ``--help`` from these without loading the
model stack.
"""

DEFAULT_MODEL = "geoalign-demo"  #: the bundled model
DEFAULT_MIN_SCORE = 0.5  #: find: boxes scoring below this are dropped (0.5: probably right)
DEFAULT_MAX_RESULTS = 100  #: find: best boxes kept per phrase
#: find: at most this many boxes per phrase are refined (the best; the rest stay as found), so the
#: refinement's cost does not grow with max_results (the default 100 + 20 spare all fit)
REFINE_MAX_BOXES = 120
DEFAULT_NMS_IOU = 0.5  #: find: a box overlapping a better one by more than this is dropped
DEFAULT_BATCH_SIZE = 16  #: tiles per backbone pass (CLI, engine) on a CPU; a GPU's is chosen for its memory
MAX_WORKERS = 64  #: tile-reader threads: more than this is a typo, not a machine
DEFAULT_CHIP_SIZE = 112  #: prepare: chip side in pixels (the bundled model's input size)
