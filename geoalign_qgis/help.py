"""The user guide and the About box (Plugins > GeoAlign > Help / About, the dock's Help button).

The guide is the docs site's QGIS page (``docs/qgis.md``), on the project's repository named in
``metadata.txt``; About says the version, the licence and where to report problems.
"""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QMessageBox

HERE = Path(__file__).resolve().parent
GUIDE = "docs/qgis.md"  #: the user guide's page in the repository (the docs site's "QGIS user guide")


def metadata() -> dict[str, str]:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(HERE / "metadata.txt", encoding="utf-8")
    return dict(cp["general"]) if cp.has_section("general") else {}


def help_url() -> str:
    """The user guide's address: the repository's QGIS page."""
    repo = metadata().get("repository", "").rstrip("/")
    return f"{repo}/blob/main/{GUIDE}"


def open_help() -> bool:
    return bool(QDesktopServices.openUrl(QUrl(help_url())))


def about_text() -> str:
    """Rich text for the About box: short lines that wrap (never a sideways scroll)."""
    meta = metadata()
    version = meta.get("version", "development copy")
    return (f"<p><b>GeoAlign</b> {version}: find objects in aerial and satellite imagery by text.</p>"
            f"<p>{meta.get('description', '')}</p>"
            f"<p>Licence: {meta.get('license', 'see LICENSE')} (the LICENSE file in the plugin folder).</p>"
            f"<p><a href=\"{help_url()}\">User guide</a> &middot; "
            f"<a href=\"{meta.get('tracker', '')}\">Report a problem</a> &middot; "
            f"<a href=\"{meta.get('homepage', '')}\">Home page</a></p>")


def show_about(parent: Any = None) -> QMessageBox:
    box = QMessageBox(parent)
    box.setWindowTitle("About GeoAlign")
    box.setTextFormat(1)  # Qt.RichText
    box.setText(about_text())
    box.setIcon(QMessageBox.Icon.Information)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.open()
    return box


__all__ = ["about_text", "help_url", "open_help", "show_about"]
