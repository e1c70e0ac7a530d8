"""The plugin zip (make plugin) and loading without torch.

The zip is built with the system Python QGIS uses (as `make plugin` does), unpacked like
"Install from ZIP" does, and loaded by a QGIS Python process that has no torch and no
geoalign_core (/usr/bin/python3 outside the venv): the plugin must load, register its
Processing provider, open its dock and tell the user the exact pip command.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from test_qgis_common import ROOT

pytestmark = pytest.mark.qgis

SYSTEM_PYTHON = "/usr/bin/python3"

LOAD_SCRIPT = textwrap.dedent(r'''
    import json, sys
    block = sys.argv[1]
    if block:
        sys.modules[block] = None  # "torch is not importable"
    from qgis.core import QgsApplication
    app = QgsApplication([], True)
    app.initQgis()
    from qgis.gui import QgsMapCanvas
    from qgis.PyQt.QtWidgets import QMainWindow

    class Bar:
        def __init__(self):
            self.messages = []
        def pushMessage(self, title, text, level=0, duration=-1):
            self.messages.append(text)

    class Iface:  # the part of QgisInterface the plugin uses
        def __init__(self):
            self.win = QMainWindow(); self.canvas = QgsMapCanvas(self.win); self.bar = Bar()
            self.toolbar, self.menu = [], []
        def mainWindow(self): return self.win
        def mapCanvas(self): return self.canvas
        def messageBar(self): return self.bar
        def addToolBarIcon(self, a): self.toolbar.append(a)
        def removeToolBarIcon(self, a): self.toolbar.remove(a)
        def addPluginToMenu(self, m, a): self.menu.append((m, a))
        def removePluginMenu(self, m, a): self.menu.remove((m, a))
        def addDockWidget(self, area, w): pass
        def removeDockWidget(self, w): pass

    iface = Iface()
    import geoalign_qgis
    plugin = geoalign_qgis.classFactory(iface)
    plugin.initGui()
    out = {"file": geoalign_qgis.__file__, "messages": iface.bar.messages,
           "toolbar": [a.text() for a in iface.toolbar], "menu": [m for m, _ in iface.menu],
           "torch_loaded": "torch" in sys.modules and sys.modules["torch"] is not None}
    plugin.action.trigger()
    out["dock_label"] = plugin.dock.deps_label.text()
    out["dock_label_visible"] = not plugin.dock.deps_label.isHidden()
    plugin.dock.set_phrases("car")
    plugin.dock.run_find()
    out["find_status"] = plugin.dock.status.text()
    provider = QgsApplication.processingRegistry().providerById("geoalign")
    out["algorithms"] = sorted(a.id() for a in provider.algorithms())
    out["can_execute"] = [list(a.canExecute()) for a in provider.algorithms()]
    out["long_name"] = provider.longName()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing
    Processing.initialize()
    import processing
    from qgis.core import QgsProcessingException
    try:
        processing.run("geoalign:heatmap", {"INPUT": sys.argv[2], "PHRASE": "car", "OUTPUT": "TEMPORARY_OUTPUT"})
        out["processing_error"] = None
    except QgsProcessingException as exc:
        out["processing_error"] = str(exc)
    plugin.unload()
    out["unloaded"] = QgsApplication.processingRegistry().providerById("geoalign") is None
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "geoalign_qgis.zip"
    subprocess.run([SYSTEM_PYTHON, str(ROOT / "geoalign_qgis" / "package.py"), "--out", str(out), "--quiet"],
                   check=True, timeout=60)
    return out


def test_zip_layout_and_metadata(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as zf:
        names = zf.namelist()
        meta_text = zf.read("geoalign_qgis/metadata.txt").decode()
    assert all(n.startswith("geoalign_qgis/") for n in names)
    for needed in ("metadata.txt", "__init__.py", "icon.svg", "plugin.py", "dock.py", "map_tool.py",
                   "tasks.py", "layers.py", "deps.py", "processing/provider.py", "processing/algorithms.py"):
        assert f"geoalign_qgis/{needed}" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.endswith("package.py") for n in names)
    assert meta_text == (ROOT / "metadata.txt").read_text()
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read_string(meta_text)
    g = cp["general"]
    assert g["qgisMinimumVersion"] == "3.22" and g["qgisMaximumVersion"] == "4.99"
    assert g["hasProcessingProvider"] == "yes" and g["icon"] == "icon.svg" and g["version"] == "0.1.0"
    for key in ("name", "description", "about", "author", "email", "repository", "tracker"):
        assert g[key].strip()


def run_plugin(python: str, plugin_dir: Path, tmp_path: Path, block: str = "") -> dict:
    from test_qgis_common import write_crop

    raster = write_crop(tmp_path / "r.tif", size=64)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(plugin_dir),
               QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "qgis-profile"), PYTHONNOUSERSITE="1")
    proc = subprocess.run([python, "-c", LOAD_SCRIPT, block, str(raster)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).is_file(), reason="needs QGIS's system Python")
def test_zip_installs_and_loads_without_torch_or_core(plugin_zip, tmp_path):
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(plugin_zip) as zf:
        zf.extractall(plugins)  # what "Install from ZIP" does
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                           capture_output=True, text=True, env={"PYTHONNOUSERSITE": "1", "PATH": "/usr/bin"})
    if probe.stdout.strip() != "None":
        pytest.skip("the system Python has torch: this test needs one without")
    out = run_plugin(SYSTEM_PYTHON, plugins, tmp_path)
    assert out["file"].startswith(str(plugins))
    assert not out["torch_loaded"]
    assert out["toolbar"] == ["Find objects by text"] and out["menu"] == ["&GeoAlign"]
    command = "/usr/bin/python3 -m pip install --user --break-system-packages geoalign"
    assert any(command in m for m in out["messages"]), out["messages"]
    assert command in out["dock_label"] and out["dock_label_visible"]
    assert command in out["find_status"]
    assert len(out["algorithms"]) == 4
    assert all(not ok and command in msg for ok, msg in out["can_execute"])
    assert "missing" in out["long_name"]
    assert out["processing_error"] and command in out["processing_error"]
    assert out["unloaded"]


def test_loads_when_torch_is_blocked_in_the_venv(tmp_path):
    out = run_plugin(sys.executable, ROOT, tmp_path, block="torch")
    assert not out["torch_loaded"]
    command = f"{sys.executable} -m pip install 'torch>=2.14,<2.15'"
    assert any(command in m for m in out["messages"]), out["messages"]
    assert "torch" in out["dock_label"] and out["dock_label_visible"]
    assert out["processing_error"] and command in out["processing_error"]
    assert out["unloaded"]
