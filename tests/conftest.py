"""Shared test set-up and fixtures.

Fixtures (data comes from the generators in ``tests/generate.py``):

* ``tiny_model`` / ``tiny_ckpt``: GeoAlign-Tiny with random weights (seed 0), and the same saved
  as a safetensors checkpoint: every code path runs offline, scores mean nothing.
* ``textured`` / ``big_textured``: a 300 x 200 px and a 4000 x 4000 px RGB GeoTIFF;
  ``regions_geojson``: two rectangles inside ``textured`` (GeoJSON, EPSG:4326).
* ``crop``: a 224 px crop of the committed sample scene.
* ``scene_1002``: a generated 512 px aerial scene with its labels GeoPackage.
* ``one_torch_thread``: torch on one thread for the module (training tests: deterministic and
  no oversubscription when two ranks share two cores).
* ``project`` / ``dock`` (QGIS plugin tests, pytest-qgis): a fresh project "saved" as
  tmp_path/analysis.qgz (results go to tmp_path/analysis_geoalign), and the GeoAlign dock with
  GeoAlign-Tiny on the CPU, disposed of after the test once its tasks have ended.

Slow tests (more than a few seconds each) carry ``@pytest.mark.slow``: ``pytest -m "not slow"``
(``make test-fast``) is the quick loop, ``make test`` runs everything.

The QGIS plugin runs its model in the GeoAlign engine process; the tests point it at this
interpreter (the project's .venv, where geoalign_core is installed), as an administrator
would with ``GEOALIGN_ENGINE_PYTHON``. QGIS's own offscreen process in the plugin tests
therefore still never imports the model stack for the plugin's sake.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("GEOALIGN_ENGINE_PYTHON", sys.executable)
# the engine imports this checkout's geoalign_core (not whichever copy its environment has installed)
os.environ.setdefault("GEOALIGN_ENGINE_PYTHONPATH", str(Path(__file__).resolve().parents[1]))
# the on-disk text-embedding store stays off unless a test turns it on (tests/test_text_store.py): a store left
# by an earlier test or run would change how many texts a test sees encoded
os.environ.setdefault("GEOALIGN_TEXT_STORE", "0")


@pytest.fixture(scope="session", autouse=True)
def _pytest_qgis_teardown_guard(request):
    """Deletes the map layers Python still holds before QGIS exits (see below). And: pytest-qgis ends the
    session with ``legendLayersAdded.disconnect(app.processEvents)``; once in a
    full CI run that connection was already gone and the disconnect's TypeError became an ERROR on the
    last test. Its cause was not found (nothing here disconnects it); the connection is made again just
    before pytest-qgis tears down, so that its teardown always succeeds."""
    if not request.config.pluginmanager.hasplugin("pytest_qgis"):
        yield
        return
    request.getfixturevalue("qgis_app")  # set up first, torn down after this fixture
    yield
    import contextlib
    import gc

    from qgis.core import QgsApplication, QgsMapLayer, QgsProject
    from qgis.PyQt import sip

    # map layers that Python still holds (a caught error's traceback keeps a test's locals alive until the
    # process ends) are deleted now, while QGIS runs: deleted after exitQgis, a vector layer's OGR handle
    # crashed the process at exit (exit code 139 after every test had passed)
    with warnings.catch_warnings():  # isinstance on some libraries' lazy objects warns (torch's reduce_op)
        warnings.simplefilter("ignore")
        held = [obj for obj in gc.get_objects() if isinstance(obj, QgsMapLayer)]
    for obj in held:
        if not sip.isdeleted(obj) and sip.ispyowned(obj):
            sip.delete(obj)
    del held

    app = QgsApplication.instance()
    if app is not None:
        signal = QgsProject.instance().legendLayersAdded
        with contextlib.suppress(TypeError, RuntimeError):
            signal.disconnect(app.processEvents)
        signal.connect(app.processEvents)


@pytest.fixture(scope="session")
def tiny_model():
    import torch

    from geoalign_core import load_model

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "RANDOM initialisation"
        model = load_model("GeoAlign-Tiny", device="cpu").eval()
    model.card = tiny_card()
    return model


def tiny_card():
    """A model card for the random test model: unknown domain (no domain warnings) and fixed logistic maps,
    so that the code paths of calibrated scores run (the maps are not fitted: scores mean nothing here;
    tests/test_calibration.py covers the fitting and the uncalibrated paths)."""
    from geoalign_core.card import ModelCard
    from geoalign_core.inference.calibration import SIMILAR_FEATURES, LogisticMap

    return ModelCard("tiny", calibration={
        "find": {"map": LogisticMap({"logodds": 1.0, "standout": 0.3, "vocabulary": 0.5}, -1.0).to_dict(),
                 "fitted_on": "nothing (a test fixture)"},
        "tiles": {"map": LogisticMap({"logodds": 1.0, "margin": 0.5}, 0.0, ("logodds", "margin")).to_dict()},
        "similar": {"map": LogisticMap({"cosine": 8.0, "standout": 0.2}, -4.0, SIMILAR_FEATURES).to_dict()},
    })


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_model, tmp_path_factory) -> str:
    from geoalign_core import save_model
    from geoalign_core.card import card_path, save_card

    path = save_model(tiny_model, tmp_path_factory.mktemp("model") / "tiny.safetensors")
    save_card(tiny_card(), card_path(path))
    return str(path)


@pytest.fixture(scope="session")
def textured(tmp_path_factory) -> Path:
    from generate import textured_raster

    return textured_raster(tmp_path_factory.mktemp("textured") / "scene.tif")


@pytest.fixture(scope="session")
def regions_geojson(textured, tmp_path_factory) -> Path:
    from generate import regions_geojson as write_regions

    return write_regions(tmp_path_factory.mktemp("regions") / "regions.geojson", textured)


@pytest.fixture(scope="session")
def big_textured(tmp_path_factory) -> Path:
    from generate import textured_raster

    return textured_raster(tmp_path_factory.mktemp("big") / "big.tif", width=4000, height=4000, block=512)


@pytest.fixture(scope="session")
def crop(tmp_path_factory) -> Path:
    from generate import sample_crop

    return sample_crop(tmp_path_factory.mktemp("crop") / "crop.tif", size=224)


@pytest.fixture(scope="session")
def scene_1002(tmp_path_factory) -> tuple[Path, Path]:
    from generate import synthetic_scene

    return synthetic_scene(tmp_path_factory.mktemp("scene_1002"), seed=1002, size=512)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU an OpenMP thread
    that loses its core stalls every parallel region: one thread keeps the runs steady."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def project(qgis_iface, qgis_new_project, tmp_path):
    from qgis.core import QgsProject

    proj = QgsProject.instance()
    proj.setFileName(str(tmp_path / "analysis.qgz"))
    yield proj
    proj.setFileName("")
    qgis_iface.newProject()


@pytest.fixture()
def dock(qgis_iface):
    from qgis.core import QgsSettings
    from qgis_helpers import TEST_MODEL, wait_for_dock, wait_until

    from geoalign_qgis.dock import GeoAlignDock
    from geoalign_qgis.dock_form import SETTINGS

    # the dock restores its last settings (as it should for a user); each test starts from the defaults, so
    # that an object size or a min score left by an earlier test does not change what this one runs
    QgsSettings().remove(SETTINGS)
    d = GeoAlignDock(qgis_iface)
    d.set_model(TEST_MODEL)
    d.device_combo.setCurrentText("cpu")
    yield d
    wait_for_dock(d)
    wait_until(lambda: d.typed_task is None and d.index_info_task is None, 60, "the dock's index tasks")
    d.dispose()
    d.deleteLater()


def pytest_configure(config):
    """With ``CI=true`` the real-data tests must run: a missing ``../shared/real_data`` fails the run
    instead of skipping them (elsewhere they skip, as the design says)."""
    from generate import REAL_DATA

    if os.environ.get("CI", "").lower() == "true" and not REAL_DATA.is_dir():
        raise pytest.UsageError(f"CI=true but the real data are missing: {REAL_DATA} (see its README); the "
                                "real-data tests would be skipped")


def pytest_collection_modifyitems(config, items):
    """pytest-timeout's per-test limit stretched by the machine's load (:mod:`timeouts`), unless a test sets its own."""
    from timeouts import load_factor

    limit = config.getini("timeout")
    if not limit:
        return
    factor = load_factor()
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(float(limit) * factor))
