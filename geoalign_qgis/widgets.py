"""Small widgets of the dock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.PyQt.QtWidgets import QLabel, QPushButton, QSizePolicy, QWidget


def push_button(text: str, parent: QWidget, action: Callable[..., Any], tip: str = "",
                toggle: bool = False) -> QPushButton:
    """A button that calls ``action`` when clicked or, with ``toggle``, when checked or unchecked
    (``action(checked)``); ``tip``: its tooltip."""
    button = QPushButton(text, parent)
    if tip:
        button.setToolTip(tip)
    if toggle:
        button.setCheckable(True)
        button.toggled.connect(action)
    else:
        button.clicked.connect(action)
    return button



class WrapLabel(QLabel):
    """A word-wrapped label never taller than its text at its width.

    In the dock's form layout a wrapped label was given the height of its size hint, worked out for a
    narrower width than it gets: a tall empty gap around two lines of text. Its maximum height follows
    its text and width instead."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setMinimumWidth(1)  # a long word (a path) never widens the dock
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

    def _fit(self) -> None:
        width = max(self.width(), 40)
        self.setMaximumHeight(max(self.heightForWidth(width), self.fontMetrics().height()) + 2)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt)
        super().setText(text)
        self._fit()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self._fit()


__all__ = ["WrapLabel"]
