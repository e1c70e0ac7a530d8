"""Default values shared by the library, the ``geoalign`` CLI and the engine (one home each).

No imports here: the CLI builds its parser and ``--help`` from these without loading the
model stack.
"""

DEFAULT_MODEL = "geoalign-demo"  #: the bundled model
DEFAULT_MIN_SCORE = 0.5  #: find: boxes scoring below this are dropped (0.5: probably right)
DEFAULT_MAX_RESULTS = 100  #: find: best boxes kept per phrase
#: find: phrases per run at most. Every phrase has a score map per tile and its own candidates, so memory
#: grows with their number (2,000 pasted phrases took an engine past 17 GB; 200 on the 2048 px sample scene
#: peak at 1.3 GB resident, CLI find --no-refine); a longer list is refused
#: with a one-line error (split it into several runs) by the CLI, the engine and the plugin alike
MAX_PHRASES = 200
#: find: at most this many boxes per phrase are refined (the best; the rest stay as found), so the
#: refinement's cost does not grow with max_results (the default 100 + 20 spare all fit)
REFINE_MAX_BOXES = 120
DEFAULT_NMS_IOU = 0.5  #: find: a box overlapping a better one by more than this is dropped
DEFAULT_BATCH_SIZE = 16  #: tiles per backbone pass (CLI, engine)
DEFAULT_CHIP_SIZE = 112  #: prepare: chip side in pixels (the bundled model's input size)
