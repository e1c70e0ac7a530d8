"""The user guide and the About box (Plugins > GeoAlign > Help / About, the dock's Help button).

The guide is the docs site's QGIS page (``docs/qgis.md``), on the project's repository named in
``metadata.txt``; About says the version, the licence and where to report problems.
"""

from __future__ import annotations

import configparser
import html
from pathlib import Path
from typing import Any

from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices, QTextOption
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

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
    """Rich text for the About box: paragraphs that wrap (never a sideways scroll)."""
    meta = metadata()
    version = meta.get("version", "development copy")
    about = "".join(f"<p>{html.escape(part.strip())}</p>" for part in meta.get("about", "").splitlines()
                    if part.strip())
    return (f"<p><b>GeoAlign</b> {version}: {html.escape(meta.get('description', ''))}</p>{about}"
            f"<p>Licence: {meta.get('license', 'see LICENSE')} (the LICENSE file in the plugin folder).</p>"
            f"<p><a href=\"{help_url()}\">User guide</a> &middot; "
            f"<a href=\"{meta.get('tracker', '')}\">Report a problem</a> &middot; "
            f"<a href=\"{meta.get('homepage', '')}\">Home page</a></p>")


class AboutDialog(QDialog):
    """The About box: the text in a browser that wraps at its width (words, else anywhere: a long path or
    address too), so it scrolls up and down when it must, never sideways; its links open in the browser.

    (A QMessageBox sized itself to the text's longest lines and, with the plugin's long "about" paragraph,
    grew wider than the screen or scrolled sideways.)"""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About GeoAlign")
        self.setObjectName("GeoAlignAbout")
        layout = QVBoxLayout(self)
        self.browser = QTextBrowser(self)
        self.browser.setOpenExternalLinks(True)
        self.browser.setLineWrapMode(QTextBrowser.LineWrapMode.WidgetWidth)
        self.browser.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.browser.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.browser.setHtml(about_text())
        layout.addWidget(self.browser)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok, self)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)
        self.resize(480, 420)

    def text(self) -> str:
        """The rich text shown (with the links' addresses)."""
        return about_text()


def show_about(parent: Any = None) -> AboutDialog:
    box = AboutDialog(parent)
    box.open()
    return box


__all__ = ["AboutDialog", "about_text", "help_url", "open_help", "show_about"]
