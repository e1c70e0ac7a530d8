"""Building a network whose every weight is loaded next, without drawing random weights first.

``open_clip.create_model`` initialises every weight at random (normal, uniform, Kaiming draws);
for a checkpoint that is then loaded strictly that work is thrown away: 3.1 s of the 3.5 s that
building ViT-B/16 took here, paid by every model command in a fresh process before its first
answer. :func:`weights_left_uninitialised` makes ``torch.nn.init``'s in-place initialisers do
nothing for the duration (the memory is allocated, its values are whatever it held), so the
caller must load every parameter afterwards (:func:`geoalign_core.zoo.build_model` does, strictly).
The swap is global to the process, so building holds :data:`BUILD_LOCK`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from torch import nn

__all__ = ["BUILD_LOCK", "weights_left_uninitialised"]

BUILD_LOCK = threading.Lock()  #: held while a network is built (the initialisers may be swapped meanwhile)


@contextlib.contextmanager
def weights_left_uninitialised() -> Iterator[None]:
    """``torch.nn.init``'s in-place initialisers (``normal_``, ``kaiming_uniform_``, ...) do nothing inside."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}

    def keep(tensor, *args, **kwargs):
        return tensor

    for n in names:
        setattr(nn.init, n, keep)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)
