"""Plugin entry: toolbar button + menu entry "Find objects by text", the dock, the settings
dialog and the Processing provider. Unloading (or quitting QGIS) stops the engine process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon

try:
    from qgis.PyQt.QtWidgets import QAction
except ImportError:  # Qt6 builds that follow PyQt6's layout
    from qgis.PyQt.QtGui import QAction

from .engine import stop_shared

MENU = "&GeoAlign"
ACTION_TEXT = "Find objects by text"
SETTINGS_TEXT = "Settings…"
HELP_TEXT = "Help / About"
ICON = Path(__file__).resolve().parent / "icon.svg"


class GeoAlignPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.action: QAction | None = None
        self.settings_action: QAction | None = None
        self.help_action: QAction | None = None
        self.dock = None
        self.provider = None

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
        self.settings_action = QAction(SETTINGS_TEXT, self.iface.mainWindow())
        self.settings_action.setObjectName("GeoAlignSettings")
        self.settings_action.triggered.connect(self.show_settings)
        self.iface.addPluginToMenu(MENU, self.settings_action)
        self.help_action = QAction(HELP_TEXT, self.iface.mainWindow())
        self.help_action.setObjectName("GeoAlignHelp")
        self.help_action.triggered.connect(self.show_help)
        self.iface.addPluginToMenu(MENU, self.help_action)
        app = QgsApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(stop_shared)

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.dispose()
            remove = getattr(self.iface, "removeDockWidget", None)
            if remove is not None:
                remove(self.dock)
            self.dock.deleteLater()
            self.dock = None
        for action in (self.action, self.settings_action, self.help_action):
            if action is None:
                continue
            remove_menu = getattr(self.iface, "removePluginMenu", None)
            if remove_menu is not None:
                remove_menu(MENU, action)
            if action is self.action and getattr(self.iface, "removeToolBarIcon", None) is not None:
                self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.action = self.settings_action = self.help_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        app = QgsApplication.instance()
        if app is not None:
            try:
                app.aboutToQuit.disconnect(stop_shared)
            except (TypeError, RuntimeError):
                pass
        stop_shared()

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

    def show_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        dlg = SettingsDialog(self.iface.mainWindow())
        if dlg.exec() and self.dock is not None:
            if self.dock.setup_panel.refresh():
                self.dock.load_models()

    def show_help(self) -> Any:
        """The About box, with the user guide's link (the dock's Help button opens the guide itself)."""
        from .help import show_about

        return show_about(self.iface.mainWindow())

    def _dock_visibility(self, visible: bool) -> None:
        if self.action is not None and self.action.isChecked() != visible:
            self.action.blockSignals(True)
            self.action.setChecked(visible)
            self.action.blockSignals(False)
