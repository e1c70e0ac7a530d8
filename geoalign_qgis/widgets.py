"""Small widgets of the dock, and disconnecting its signals."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QPainter
from qgis.PyQt.QtWidgets import QLabel, QPushButton, QSizePolicy, QWidget


def disconnect_all(connections: Iterable[tuple[Any, Any]]) -> None:
    """Disconnect each ``(signal, slot)``; one already disconnected, or whose object is gone, is skipped."""
    for signal, slot in connections:
        try:
            signal.disconnect(slot)
        except (TypeError, RuntimeError):
            pass


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


class ElideLabel(QLabel):
    """One line of text, cut with "…" at the right when the label is narrower than the text.

    The Index line sits beside the Collection… button: wrapped, its long text ("indexed: 16 tiles of
    224 px, 12 MB (crop.….parquet); phrases are answered from it") became a tall, narrow column next to a
    short button. Elided it stays one line at any dock width; the whole text is its tooltip (with the
    tooltip set on it, e.g. the index's path). ``text()`` is the whole text."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self._tip = ""
        self.setWordWrap(False)
        self.setMinimumWidth(1)  # the text never widens the dock: it is cut instead
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self._update_tip()

    def shown_text(self) -> str:
        """What the label shows at its width (the text, or its start and "…")."""
        width = self.contentsRect().width() - 2 * max(self.margin(), 0)
        return self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, max(width, 0))

    def is_elided(self) -> bool:
        return self.shown_text() != self.text()

    def _update_tip(self) -> None:
        whole = self.text()
        super().setToolTip("\n".join(t for t in ((whole if self.is_elided() else ""), self._tip) if t))

    def setText(self, text: str) -> None:  # noqa: N802 (Qt)
        super().setText(text)
        self._update_tip()

    def setToolTip(self, tip: str) -> None:  # noqa: N802 (Qt)
        self._tip = tip or ""
        self._update_tip()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt)
        return QSize(1, super().minimumSizeHint().height())

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self._update_tip()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        painter = QPainter(self)
        rect = self.contentsRect().adjusted(self.margin(), self.margin(), -self.margin(), -self.margin())
        self.style().drawItemText(painter, rect, int(self.alignment()), self.palette(), self.isEnabled(),
                                  self.shown_text(), self.foregroundRole())
        painter.end()


__all__ = ["ElideLabel", "WrapLabel"]
