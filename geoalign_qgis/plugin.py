"""Plugin entry: toolbar button + menu entry "Find objects by text", the dock, the
Processing provider, and the missing-dependency message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsMessageLog
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon

try:
    from qgis.PyQt.QtWidgets import QAction
except ImportError:  # Qt6 builds that follow PyQt6's layout
    from qgis.PyQt.QtGui import QAction

from . import deps
from .compat import MSG_WARNING, push_message

MENU = "&GeoAlign"
ACTION_TEXT = "Find objects by text"
ICON = Path(__file__).resolve().parent / "icon.svg"


class GeoAlignPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.action: QAction | None = None
        self.dock = None
        self.provider = None
        self.deps_status = deps.check()

    # -- QGIS plugin API ------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802
        from .processing.provider import GeoAlignProvider

        self.provider = GeoAlignProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), ACTION_TEXT, self.iface.mainWindow())
        self.action.setObjectName("GeoAlignFindObjects")
        self.action.setCheckable(True)
        self.action.setToolTip("GeoAlign: find objects in imagery by text")
        self.action.toggled.connect(self.show_dock)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(MENU, self.action)
        if not self.deps_status.ok:
            message = self.deps_status.message()
            QgsMessageLog.logMessage(message, "GeoAlign", MSG_WARNING)
            push_message(self.iface, "GeoAlign", message.replace("\n", " "), MSG_WARNING, 0)

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.dispose()
            remove = getattr(self.iface, "removeDockWidget", None)
            if remove is not None:
                remove(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            for name in ("removePluginMenu", "removeToolBarIcon"):
                fn = getattr(self.iface, name, None)
                if fn is None:
                    continue
                if name == "removePluginMenu":
                    fn(MENU, self.action)
                else:
                    fn(self.action)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- dock -----------------------------------------------------------------------
    def show_dock(self, visible: bool = True) -> Any:
        if self.dock is None:
            if not visible:
                return None
            from .dock import GeoAlignDock

            self.dock = GeoAlignDock(self.iface, self.iface.mainWindow())
            self.dock.visibilityChanged.connect(self._dock_visibility)
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.setVisible(visible)
        if visible:
            self.dock.raise_()
        return self.dock

    def _dock_visibility(self, visible: bool) -> None:
        if self.action is not None and self.action.isChecked() != visible:
            self.action.blockSignals(True)
            self.action.setChecked(visible)
            self.action.blockSignals(False)
