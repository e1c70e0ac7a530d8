"""The plugin zip (make plugin), loading it in QGIS's own Python, and the one-click set-up.

The zip is unpacked as "Install from ZIP" does and loaded by QGIS's Python (/usr/bin/python3,
outside the venv: no torch, no geoalign_core there). Without an engine the dock offers the
set-up; with one (GEOALIGN_ENGINE_PYTHON) a find runs in the engine process, and QGIS's
process never imports torch, open_clip, rasterio, geopandas, shapely or pyproj.
"""

from __future__ import annotations

import configparser
import json
import os
import platform
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest
from qgis_helpers import ROOT, sample_crop
from timeouts import load_factor, scaled

from geoalign_core import __version__

pytestmark = pytest.mark.qgis

SYSTEM_PYTHON = "/usr/bin/python3"
HEAVY = ("torch", "torchvision", "open_clip", "rasterio", "geopandas", "shapely", "pyproj", "pyogrio", "triton")

LOAD_SCRIPT = textwrap.dedent(r'''
    import json, sys, time, pkgutil, importlib
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
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

    def wait(cond, timeout=180 * LOAD_FACTOR):
        t0 = time.time()
        while not cond() and time.time() - t0 < timeout:
            QgsApplication.processEvents(); time.sleep(0.02)
        QgsApplication.processEvents()

    iface = Iface()
    import geoalign_qgis
    # every module of the plugin tree imports in QGIS's Python
    for info in pkgutil.walk_packages(geoalign_qgis.__path__, "geoalign_qgis."):
        if not info.name.endswith(".package"):
            importlib.import_module(info.name)
    plugin = geoalign_qgis.classFactory(iface)
    plugin.initGui()
    out = {"file": geoalign_qgis.__file__, "toolbar": [a.text() for a in iface.toolbar],
           "menu": [m for m, _ in iface.menu]}
    layer = QgsRasterLayer(sys.argv[1], "crop")
    QgsProject.instance().addMapLayer(layer)
    plugin.action.trigger()
    dock = plugin.dock
    out["setup_visible"] = not dock.setup_panel.isHidden()
    out["setup_text"] = dock.setup_panel.message.text()
    out["plan"] = dock.setup_panel.plan_label.text()
    out["setup_enabled"] = dock.setup_panel.setup_button.isEnabled()
    dock.set_raster_layer(layer)
    dock.set_phrases("red car")
    dock.set_scope("layer")
    dock.min_score.setValue(0.0)
    dock.max_results.setValue(3)
    if sys.argv[2]:
        dock.set_model(sys.argv[2])
    task = dock.run_find()
    out["find_started"] = task is not None
    wait(lambda: not dock.is_running())
    out["find_status"] = dock.status.text()
    out["found"] = dock.last_layer.featureCount() if dock.last_layer is not None else None
    provider = QgsApplication.processingRegistry().providerById("geoalign")
    out["algorithms"] = sorted(a.id() for a in provider.algorithms())
    out["can_execute"] = [list(a.canExecute()) for a in provider.algorithms()]
    out["long_name"] = provider.longName()
    plugin.unload()
    out["unloaded"] = QgsApplication.processingRegistry().providerById("geoalign") is None
    out["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY and sys.modules[m] is not None)
    print("RESULT " + json.dumps(out))
''').replace("HEAVY", repr(HEAVY)).replace("LOAD_FACTOR", repr(load_factor()))


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "geoalign_qgis.zip"
    subprocess.run([sys.executable, str(ROOT / "geoalign_qgis" / "package.py"), "--out", str(out), "--quiet"],
                   check=True, timeout=scaled(300))
    return out


@pytest.fixture(scope="module")
def unpacked(plugin_zip, tmp_path_factory) -> Path:
    plugins = tmp_path_factory.mktemp("plugins")
    with zipfile.ZipFile(plugin_zip) as zf:
        zf.extractall(plugins)  # what "Install from ZIP" does
    return plugins


def test_zip_layout_and_metadata(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as zf:
        names = zf.namelist()
        meta_text = zf.read("geoalign_qgis/metadata.txt").decode()
        wheel = next(n for n in names if n.startswith("geoalign_qgis/wheels/") and n.endswith(".whl"))
        with zf.open(wheel) as fh, zipfile.ZipFile(fh) as whl:
            wheel_names = whl.namelist()
        # the engine protocol, parameter sets and defaults: geoalign_core's own files, not copies of their values
        for rel in ("defaults.py", "params.py", "engine/__init__.py", "engine/protocol.py"):
            assert zf.read(f"geoalign_qgis/core/{rel}") == (ROOT / "geoalign_core" / rel).read_bytes(), rel
    assert all(n.startswith("geoalign_qgis/") for n in names)
    for needed in ("metadata.txt", "__init__.py", "icon.svg", "plugin.py", "dock.py", "map_tool.py", "engine.py",
                   "environment.py", "tasks.py", "layers.py", "results.py", "setup_panel.py", "settings_dialog.py",
                   "vector_io.py", "processing/provider.py", "processing/base.py", "processing/algorithms.py"):
        assert f"geoalign_qgis/{needed}" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.endswith("package.py") for n in names)
    # the GeoAlign package of the same version, for the one-click set-up of the engine environment
    assert wheel == f"geoalign_qgis/wheels/geoalign-{__version__}-py3-none-any.whl"
    for needed in ("geoalign_core/engine/__main__.py", "geoalign_core/weights/geoalign-demo.safetensors",
                   "geoalign_core/archs/GeoAlign-Tiny.json"):
        assert needed in wheel_names
    # the plugin folder's metadata.txt, stamped with the one version and its changelog
    src = configparser.ConfigParser(interpolation=None)
    src.optionxform = str
    src.read(ROOT / "geoalign_qgis" / "metadata.txt")
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read_string(meta_text)
    g = cp["general"]
    assert {k: v for k, v in g.items() if k not in ("version", "changelog")} == dict(src["general"])
    assert "version" not in src["general"] and "changelog" not in src["general"]
    # tested on QGIS 3.22 (Qt5) only: no QGIS 4 / Qt6
    assert g["qgisMinimumVersion"] == "3.22" and g["qgisMaximumVersion"] == "3.99"
    assert g["hasProcessingProvider"] == "yes" and g["icon"] == "icon.svg" and g["version"] == __version__
    assert g["changelog"].startswith(f"{__version__}: ") and len(g["changelog"]) > 40
    for key in ("name", "description", "about", "author", "repository", "tracker", "license"):
        assert g[key].strip()
    assert "example.org" not in meta_text  # no placeholder address (package.py --email stamps the real one)
    with zipfile.ZipFile(plugin_zip) as zf:
        assert "Apache License" in zf.read("geoalign_qgis/LICENSE").decode()  # plugins.qgis.org needs it
    assert "pip install" not in g["about"]  # nothing is installed into QGIS's Python


def run_plugin(plugin_dir: Path, tmp_path: Path, engine: str | None, model: str = "") -> dict:
    raster = sample_crop(tmp_path / "r.tif", size=224)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "GEOALIGN_ENGINE_PYTHON")}
    env.update(QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(plugin_dir), PATH="/usr/bin:/bin",
               QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "qgis-profile"), PYTHONNOUSERSITE="1")
    if engine:
        env["GEOALIGN_ENGINE_PYTHON"] = engine
    proc = subprocess.run([SYSTEM_PYTHON, "-c", LOAD_SCRIPT, str(raster), model], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


needs_system_python = pytest.mark.skipif(not Path(SYSTEM_PYTHON).is_file(), reason="needs QGIS's system Python")


@needs_system_python
def test_without_an_engine_the_dock_offers_the_setup(unpacked, tmp_path):
    out = run_plugin(unpacked, tmp_path, engine=None)
    assert out["file"].startswith(str(unpacked))
    # three menu entries: Find objects by text, Settings…, Help / About
    assert out["toolbar"] == ["Find objects by text"] and out["menu"] == ["&GeoAlign"] * 3
    assert out["setup_visible"] and out["setup_enabled"]
    assert "separate Python environment" in out["setup_text"]
    # what will be installed and how: the private env in the profile, pinned torch (CPU build: no GPU here)
    assert str(tmp_path / "qgis-profile") in out["plan"] and "torch==2.14.1" in out["plan"]
    assert f"geoalign-{__version__}-py3-none-any.whl" in out["plan"]
    assert "QGIS's own Python is not changed" in out["plan"]
    assert "not set up yet" in out["find_status"] and not out["find_started"]
    assert len(out["algorithms"]) == 7  # find, match, heatmap, tiles, index, similar, fine-tune
    assert all(not ok and "Set up GeoAlign" in msg for ok, msg in out["can_execute"])
    assert "not set up" in out["long_name"]
    assert out["unloaded"] and out["heavy"] == []


@pytest.mark.slow
@needs_system_python
def test_qgis_python_runs_a_find_in_the_engine_and_imports_no_heavy_package(unpacked, tmp_path):
    out = run_plugin(unpacked, tmp_path, engine=sys.executable, model="GeoAlign-Tiny")
    assert not out["setup_visible"]
    assert out["find_started"] and out["found"] and out["found"] > 0, out["find_status"]
    assert all(ok for ok, _ in out["can_execute"])
    assert out["heavy"] == []  # the model stack stayed in the engine process


# ---------------------------------------------------------------------------- the set-up
def small_plan(target: Path, wheel: Path):
    """A real set-up of a small pinned package set: the GeoAlign wheel alone, offline."""
    from geoalign_qgis.environment import InstallPlan

    return InstallPlan(target, sys.executable, packages=[str(wheel)], pip_args=["--no-deps", "--no-index"],
                       check_modules=["geoalign_core", "geoalign_core.engine.server"], build="test")


@pytest.mark.slow
def test_setup_creates_verifies_and_is_found(unpacked, tmp_path):
    from geoalign_qgis.environment import MARKER, Installer, locate_engine, private_env_dir

    wheel = next((unpacked / "geoalign_qgis" / "wheels").glob("*.whl"))
    target = private_env_dir(tmp_path / "profile")
    assert locate_engine(None, tmp_path / "profile", {}).python is None
    steps, lines = [], []
    py = Installer(small_plan(target, wheel), tmp_path / "setup.log", on_line=lines.append,
                   on_progress=lambda title, f: steps.append((title, f))).run()
    assert py == target / "bin" / "python" and py.is_file()
    marker = json.loads((target / MARKER).read_text())
    assert marker["check"]["ok"] and marker["check"]["python"] == str(py)
    assert [s for s, _ in steps] == ["creating the environment", "installing GeoAlign",
                                     "verifying: starting the engine", "done"]
    assert [f for _, f in steps] == sorted(f for _, f in steps) and steps[-1][1] == 1.0
    assert any("engine started" in ln for ln in lines)
    loc = locate_engine(None, tmp_path / "profile", {})
    assert loc.python == str(py) and loc.source == "private environment"
    # the new environment is separate: it does not see this venv's (or QGIS's) packages
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "True"


@pytest.mark.slow
def test_failed_setup_leaves_nothing(unpacked, tmp_path):
    from geoalign_qgis.environment import Installer, InstallError, InstallPlan, locate_engine, private_env_dir

    target = private_env_dir(tmp_path / "profile")
    plan = InstallPlan(target, sys.executable, packages=["geoalign-no-such-package==9.9"],
                       pip_args=["--no-index"], build="test")
    with pytest.raises(InstallError, match="installing GeoAlign failed"):
        Installer(plan, tmp_path / "setup.log").run()
    assert not target.exists() and locate_engine(None, tmp_path / "profile", {}).python is None
    assert "geoalign-no-such-package" in (tmp_path / "setup.log").read_text()


def test_cancelled_setup_leaves_nothing(unpacked, tmp_path):
    from geoalign_qgis.environment import InstallCancelled, Installer, private_env_dir

    wheel = next((unpacked / "geoalign_qgis" / "wheels").glob("*.whl"))
    target = private_env_dir(tmp_path / "profile")
    flag = threading.Event()
    titles = []

    def progress(title, fraction):
        titles.append(title)
        if title == "creating the environment":
            threading.Timer(0.3, flag.set).start()

    with pytest.raises(InstallCancelled):  # without the cancel, the set-up runs on and succeeds
        Installer(small_plan(target, wheel), tmp_path / "setup.log", on_progress=progress,
                  cancelled=flag.is_set).run()
    assert titles[-1] in ("creating the environment", "installing GeoAlign")  # stopped early, not at the end
    assert not target.exists()


def test_default_plan_picks_the_torch_build(monkeypatch, tmp_path):
    import platform

    from geoalign_qgis import environment

    if platform.system() != "Linux":
        pytest.skip("the index choice differs per platform")
    monkeypatch.delenv(environment.TORCH_INDEX_VAR, raising=False)
    cpu = environment.default_plan(tmp_path / "env", package=f"geoalign=={__version__}", gpu=False)
    assert cpu.torch == ["torch==2.14.1", "torchvision==0.29.1"]
    assert cpu.torch_index == environment.TORCH_CPU_INDEX and cpu.build == "CPU build"
    gpu = environment.default_plan(tmp_path / "env", package=f"geoalign=={__version__}", gpu="GPU 0: NVIDIA H100")
    assert gpu.torch_index is None and "CUDA" in gpu.build and "H100" in gpu.describe()
    steps = cpu.steps()
    assert steps[0].argv[1:3] == ["-m", "venv"] and "--index-url" in steps[1].argv
    assert steps[2].argv[-1] == f"geoalign=={__version__}"
    monkeypatch.setenv(environment.TORCH_INDEX_VAR, "pypi")
    pypi = environment.default_plan(tmp_path / "env", package="x", gpu=False)
    assert pypi.torch_index is None and "CUDA" in pypi.build
    # the pins agree with the project's own pair
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_PAIR := torch==2.14.1 torchvision==0.29.1" in makefile


def test_engine_python_order(tmp_path):
    from geoalign_qgis.environment import ENV_VAR, locate_engine

    py = tmp_path / "python"
    py.write_text("")
    other = tmp_path / "other"
    other.write_text("")
    assert locate_engine(str(other), tmp_path, {ENV_VAR: str(py)}).python == str(py)
    assert locate_engine(str(other), tmp_path, {}).source == "settings"
    missing = locate_engine(str(tmp_path / "gone"), tmp_path, {})
    assert missing.python is None and "does not exist" in missing.problem
    assert locate_engine(None, tmp_path, {ENV_VAR: str(tmp_path / "gone")}).problem.startswith(ENV_VAR)


def test_release_zip_needs_a_real_email(tmp_path, monkeypatch):
    from geoalign_qgis import package

    monkeypatch.delenv(package.EMAIL_VAR, raising=False)
    out = tmp_path / "p.zip"
    with pytest.raises(SystemExit, match="--release needs the maintainer's e-mail"):
        package.main(["--out", str(out), "--no-wheel", "--quiet", "--release"])
    with pytest.raises(SystemExit, match="placeholder address"):
        package.main(["--out", str(out), "--no-wheel", "--quiet", "--release", "--email", "me@example.org"])
    assert not out.exists()
    assert package.main(["--out", str(out), "--no-wheel", "--quiet", "--release", "--email", "me@geoalign.dev"]) == 0
    with zipfile.ZipFile(out) as zf:
        meta = zf.read("geoalign_qgis/metadata.txt").decode()
    assert "email = me@geoalign.dev" in meta and "license = Apache-2.0" in meta


@pytest.mark.slow
def test_an_unreachable_pytorch_site_is_named_and_pypi_offered(tmp_path):
    """pip's last words ("No matching distribution found for torch") hide that the wheel site was down:
    the set-up names the site, and the PyPI plan is the fallback (with its size said plainly)."""
    from geoalign_qgis import environment
    from geoalign_qgis.environment import Installer, InstallError, InstallPlan

    target = environment.private_env_dir(tmp_path / "profile")
    # a wheel index nobody listens on (the discard port): what an unreachable download.pytorch.org looks like
    plan = InstallPlan(target, sys.executable, torch=["torch==2.14.1"], torch_index="http://127.0.0.1:9/whl/cpu",
                       packages=["geoalign"], pip_args=["--retries", "0", "--timeout", "2"], build="CPU build")
    with pytest.raises(InstallError) as err:
        Installer(plan, tmp_path / "setup.log").run()
    assert err.value.unreachable == "127.0.0.1:9"
    message = str(err.value)
    assert "the PyTorch wheel site 127.0.0.1:9 could not be reached" in message and "PyPI" in message
    assert "No matching distribution" not in message and not target.exists()
    fallback = environment.pypi_plan(plan)
    assert fallback.torch_index is None and fallback.torch == plan.torch and fallback.packages == plan.packages
    if platform.system() == "Linux":
        assert "6 GB" in fallback.describe() and "no NVIDIA GPU" in fallback.describe()
        assert "6 GB" in environment.pypi_offer(plan)
