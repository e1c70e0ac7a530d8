"""What an analyst meets in the dock beyond the happy path, under real QGIS 3.22 (pytest-qgis,
offscreen): no QGIS task the user did not start, a pasted phrase list never searched by itself
(and refused by Find beyond the limit), the dock following a newly added raster, "queued" while
a request waits behind another, the object size, a raster removed during a run, drawn regions
outside the raster, and Find similar handing the map back after its run.
The engine is this test interpreter (tests/conftest.py)."""

from __future__ import annotations

import pytest

qgis_core = pytest.importorskip("qgis.core")

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle  # noqa: E402
from qgis_helpers import add_raster, drag_similar_box, fill_search, finished, sample_crop, wait_for_dock, wait_until  # noqa: E402

pytestmark = pytest.mark.qgis


@pytest.fixture()
def raster(tmp_path) -> QgsRasterLayer:
    return add_raster(sample_crop(tmp_path / "crop.tif", size=224), "crop")


def warnings_of(iface) -> list[str]:
    return list(iface.messageBar().get_messages(Qgis.Warning))


def test_opening_the_dock_starts_no_qgis_task(qgis_iface, project, dock):
    # the model list (and an index check) run beside QGIS's task manager: quitting never asks about them
    assert dock.models_task is not None
    assert QgsApplication.taskManager().countActiveTasks() == 0
    wait_until(lambda: dock.models_task is None, 120, "the model list")
    assert dock.models and dock.model_combo.count() == len(dock.models)


def test_a_pasted_phrase_list_is_never_searched_by_itself(qgis_iface, project, dock, raster, tmp_path):
    from geoalign_qgis.dock_index import TYPED_MAX_PHRASES
    from geoalign_qgis.inputs import MAX_PHRASES

    dock.set_raster_layer(raster)
    dock.index_file = tmp_path / "index.parquet"  # as if the raster had an index: typing would search
    dock.as_you_type.setChecked(True)
    dock.set_phrases(["car", "tree"])
    assert dock._typing_timer.isActive()  # a short list is answered as typed
    dock._typing_timer.stop()
    dock.set_phrases([f"thing {i}" for i in range(2000)])
    assert not dock._typing_timer.isActive() and "too many to answer as you type" in dock.status.text()
    assert dock._typed_query() is None and dock.typed_task is None
    dock.index_file = None
    assert dock.run_find() is None and dock.task is None  # Find refuses before anything is sent
    assert f"at most {MAX_PHRASES}" in dock.status.text()
    assert TYPED_MAX_PHRASES < MAX_PHRASES


def test_the_dock_follows_a_newly_added_raster(qgis_iface, project, dock, raster, tmp_path):
    dock.set_raster_layer(raster)
    other = QgsRasterLayer(str(sample_crop(tmp_path / "other.tif", size=224, col=0, row=0)), "other")
    QgsProject.instance().addMapLayer(other)
    assert dock.raster_layer() is other
    dock._active_layer_changed(raster)  # choosing a raster in the Layers panel
    assert dock.raster_layer() is raster


def test_queued_then_object_size_then_the_raster_removed_during_the_run(qgis_iface, project, dock, raster):
    from geoalign_qgis.tasks import QUEUED, EngineTask

    dock.set_raster_layer(raster)
    dock.set_scope("layer")
    dock.set_phrases("car")
    dock.min_score.setValue(0.0)
    dock.max_results.setValue(3)
    dock.object_size.setValue(5.0)
    first = dock.run_find()
    assert first is not None and first.params["object_size"] == 5.0, dock.status.text()
    wait_until(lambda: first.stage not in ("", "starting the engine", "waiting for the engine"), 120,
               "the first request to run")
    stages: list[str] = []
    second = EngineTask("second", "find", dict(first.params, out=first.params["out"] + ".2.gpkg"))
    second.stageChanged.connect(stages.append)
    second.start()
    wait_until(lambda: bool(stages), 60, "the second request's first stage")
    assert stages[0] == QUEUED  # not "starting the engine": it waits behind the first
    QgsProject.instance().removeMapLayer(raster.id())  # the raster goes while Find runs
    wait_for_dock(dock)
    wait_until(lambda: second.isActive() is False and second.status() in (second.Complete, second.Terminated),
               240, "the second request")
    assert not first.error, first.error
    layer = dock.last_layer
    assert layer is not None and layer.name().endswith("(raster removed)")
    assert any("was removed while GeoAlign ran" in m for m in warnings_of(qgis_iface))
    assert first.result["metadata"]["object_sizes_m"]  # the engine took the object size


def test_drawn_regions_outside_the_raster_are_reported(qgis_iface, project, dock, raster):
    dock.set_raster_layer(raster)
    e = raster.extent()
    inside = QgsRectangle(e.xMinimum() + 10, e.yMinimum() + 10, e.xMinimum() + 60, e.yMinimum() + 60)
    far = QgsRectangle(e.xMaximum() + 500, e.yMaximum() + 500, e.xMaximum() + 600, e.yMaximum() + 600)
    dock.map_tool.add_rectangle(inside, raster.crs())
    dock.map_tool.add_rectangle(far, raster.crs())
    assert dock.regions_label.text() == "2 regions"
    fill_search(dock, "car", scope="regions", min_score=0.0)
    task = finished(dock, dock.run_find())
    assert task.params.get("within")
    assert any("1 of the 2 drawn regions lie outside crop" in m for m in warnings_of(qgis_iface))
    dock.map_tool.remove_last()
    assert dock.regions_label.text() == "1 region"


def test_find_similar_hands_the_map_back_after_its_run(qgis_iface, project, dock, raster):
    from qgis.gui import QgsMapToolExtent

    drag_similar_box(qgis_iface, dock, raster)
    assert dock.task is not None and not dock.similar_button.isChecked()
    assert not isinstance(qgis_iface.mapCanvas().mapTool(), QgsMapToolExtent)
    wait_for_dock(dock)


def test_a_new_index_goes_beside_the_raster_only_inside_the_project_folder(tmp_path):
    from geoalign_qgis.indexes import index_path

    data = tmp_path / "someone_elses_data"
    data.mkdir()
    raster = sample_crop(data / "r.tif", size=224)
    profile = tmp_path / "profile"
    beside = data / "r.geoalign-demo.geoalign-index.parquet"
    # an unsaved project, or a raster outside the project's folder: the plugin's folder, not the data folder
    assert index_path(str(raster), "geoalign-demo", profile, "project", None).parent == profile / "geoalign" / "indexes"
    assert index_path(str(raster), "geoalign-demo", profile, "project", str(tmp_path / "project")) != beside
    assert index_path(str(raster), "geoalign-demo", profile, "project", str(tmp_path)) == beside  # inside the project
    assert index_path(str(raster), "geoalign-demo", profile, "raster") == beside
    assert index_path(str(raster), "geoalign-demo", profile, "plugin").parent == profile / "geoalign" / "indexes"


def test_results_of_an_unsaved_project_move_next_to_it_on_save(qgis_iface, qgis_new_project, dock, raster, tmp_path):
    from geoalign_qgis import layers

    project = QgsProject.instance()
    assert not project.fileName()
    dock.set_raster_layer(raster)
    fill_search(dock, "car", scope="layer", min_score=0.0, max_results=2)
    finished(dock, dock.run_find())
    result = dock.last_layer
    old = dock.last_output
    assert old.parent == layers.default_results_dir()
    asked = []
    dock.ask_move_results = lambda n, folder: asked.append((n, folder)) or True
    try:
        assert project.write(str(tmp_path / "later.qgz"))  # the analyst saves the project now
        assert asked and asked[0][0] == 1 and asked[0][1] == tmp_path / "later_geoalign"
        moved = tmp_path / "later_geoalign" / old.name
        assert moved.is_file() and not old.exists()
        assert result.source().startswith(str(moved)) and result.isValid() and result.featureCount() == 2
        asked.clear()
        project.write()  # nothing left to move: no question
        assert not asked
    finally:
        project.setFileName("")
        qgis_iface.newProject()


def test_a_collection_index_is_searched_into_one_layer_with_a_scene_field(qgis_iface, project, dock, tmp_path):
    import os
    import subprocess
    import sys

    from qgis_helpers import ROOT, TEST_MODEL

    a = sample_crop(tmp_path / "a.tif", size=224)
    b = sample_crop(tmp_path / "b.tif", size=224, col=0, row=0)
    folder = tmp_path / "city"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "geoalign_core.cli", "index", str(a), str(b), "--out", str(folder),
                    "--model", TEST_MODEL, "--device", "cpu", "--quiet"], check=True, env=env, timeout=600)
    assert not dock.open_collection(tmp_path)  # not a collection: said in the status line
    assert "not a collection index" in dock.status.text()
    assert dock.open_collection(folder)
    assert "2 scenes" in dock.index_state.text() and dock.collection_button.text() == "Close collection"
    dock.set_phrases("car")
    dock.min_score.setValue(0.0)
    dock.max_results.setValue(6)
    assert dock.run_heatmap() is None and "close the collection" in dock.status.text()  # one raster only
    task = dock.run_find()
    assert task is not None, dock.status.text()
    assert task.params["index"] == str(folder) and "raster" not in task.params
    wait_for_dock(dock)
    assert not task.error, task.error
    layer = dock.last_layer
    assert layer.name() == "car (collection city)" and layer.featureCount() == 6
    scenes = {f["scene"] for f in layer.getFeatures()}
    assert scenes <= {"a", "b"} and scenes
    dock.close_collection()
    assert dock.collection is None and dock.layer_combo.isEnabled()


def test_quitting_while_a_find_runs_ends_it_and_the_engine(qgis_iface, project, raster):
    """What QGIS's quit does to the plugin (unload, then the engine stops) while a Find still runs."""
    import os

    from qgis_helpers import TEST_MODEL

    import geoalign_qgis
    from geoalign_qgis import engine

    plugin = geoalign_qgis.classFactory(qgis_iface)
    plugin.initGui()
    plugin.action.trigger()
    dock = plugin.dock
    dock.set_model(TEST_MODEL)
    dock.device_combo.setCurrentText("cpu")
    dock.set_raster_layer(raster)
    dock.set_scope("layer")
    dock.set_phrases("car")
    n_layers = len(QgsProject.instance().mapLayers())
    task = dock.run_find()
    assert task is not None, dock.status.text()
    wait_until(lambda: task.stage not in ("", "starting the engine"), 120, "the find to run")
    pid = engine._shared.pid
    plugin.unload()  # QGIS quitting: the dock goes, the engine is stopped
    wait_until(lambda: task.status() in (task.Complete, task.Terminated), 60, "the task to end")
    assert task.was_cancelled or task.error  # ended, not left hanging
    assert engine._shared is None
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower(),
               30, "the engine to end")
    assert len(QgsProject.instance().mapLayers()) == n_layers  # no half result added


def test_setup_panel_names_an_unreachable_site_offers_pypi_and_shows_the_step_in_full(qgis_iface, tmp_path):
    import sys
    from types import SimpleNamespace

    from geoalign_qgis import environment
    from geoalign_qgis.setup_panel import SetupPanel

    panel = SetupPanel()
    panel.plan = environment.InstallPlan(tmp_path / "env", sys.executable, torch=["torch==2.14.1"],
                                         torch_index=environment.TORCH_CPU_INDEX, packages=["geoalign"],
                                         build="CPU build")
    step = "installing PyTorch (PyPI's build (CUDA, runs on CPU too))"
    panel._show_step(step)  # the whole step above the bar; the bar itself only the percentage
    assert panel.progress.format() == "%p%" and panel.step_label.text() == "I" + step[1:] + "…"
    assert panel.step_label.wordWrap()
    failed = SimpleNamespace(was_cancelled=False, python=None, unreachable="download.pytorch.org",
                             error="installing PyTorch (CPU build) failed: the PyTorch wheel site download.pytorch.org "
                                   "could not be reached (Failed to establish a new connection). Try again later, "
                                   "or set up with PyTorch from PyPI")
    panel._done(failed)
    assert "could not be reached" in panel.message.text() and "No matching distribution" not in panel.message.text()
    assert not panel.pypi_button.isHidden() and "PyPI" in panel.pypi_button.text()
    panel.deleteLater()


def test_the_wrapped_model_line_leaves_no_gap(qgis_iface, dock):
    dock.resize(380, 900)
    dock.show()
    dock.model_state.setText("available offline; trained on synthetic 0.3 m RGB rendered aerial; scores calibrated")
    for _ in range(5):
        QgsApplication.processEvents()
    label = dock.model_state
    assert label.height() <= label.heightForWidth(label.width()) + 2  # as tall as its lines, no more
    combo_bottom = dock.model_combo.mapTo(dock, dock.model_combo.rect().bottomLeft()).y()
    label_top = label.mapTo(dock, label.rect().topLeft()).y()
    assert 0 <= label_top - combo_bottom < 20, (combo_bottom, label_top)
    dock.hide()


def test_the_about_box_wraps_and_never_scrolls_sideways(qgis_iface):
    from geoalign_qgis.help import help_url, show_about

    about = show_about(qgis_iface.mainWindow())
    try:
        about.resize(420, 420)  # a normal dialog width (the text is longer than that, many times)
        for _ in range(5):
            QgsApplication.processEvents()
        browser = about.browser
        assert browser.horizontalScrollBar().maximum() == 0  # wrapped: nothing to scroll to sideways
        assert browser.document().size().width() <= browser.viewport().width() + 1
        assert "separate GeoAlign engine process" in browser.toPlainText()  # metadata.txt's about paragraph
        assert help_url() in about.text() and "Apache-2.0" in about.text()
    finally:
        about.close()
        about.deleteLater()


def test_the_index_line_stays_one_line_beside_the_collection_button(qgis_iface, project, dock):
    # the model list and the index check, when they arrive, set the line
    wait_until(lambda: dock.models_task is None and dock.index_info_task is None, 120, "the dock's own requests")
    width = dock.widget().minimumWidth()
    assert width <= 420
    dock.resize(width, 900)
    dock.show()
    long = ("indexed: 1024 tiles of 224 px, 512 MB (a_long_scene_name_2025-06-01_ortho.geoalign-tiny-e632a8."
            "geoalign-index.parquet); phrases are answered from it")
    dock.index_state.setText(long)
    dock.index_state.setToolTip("/data/a_long_scene_name.geoalign-index.parquet")
    for _ in range(5):
        QgsApplication.processEvents()
    label, button = dock.index_state, dock.collection_button
    line = label.fontMetrics().height()
    assert label.height() <= line + 4  # one line, never a column of wrapped words
    top = label.mapTo(dock, label.rect().topLeft()).y()
    b_top = button.mapTo(dock, button.rect().topLeft()).y()
    assert b_top <= top + label.height() and top <= b_top + button.height()  # the same row
    assert label.mapTo(dock, label.rect().topRight()).x() <= button.mapTo(dock, button.rect().topLeft()).x()
    assert label.is_elided() and label.shown_text().endswith("…") and label.text() == long
    assert long in label.toolTip() and "/data/a_long_scene_name" in label.toolTip()  # all of it on hover
    assert dock.widget().widget().minimumSizeHint().width() <= dock.widget().minimumWidth()  # never widened
    dock.index_state.setText("no raster")
    assert not label.is_elided() and label.toolTip() == "/data/a_long_scene_name.geoalign-index.parquet"
    dock.hide()


def test_phrases_typed_during_a_run_are_not_searched_after_it_was_cancelled(qgis_iface, project, dock):
    from types import SimpleNamespace

    # typing stopped while a run went on: its end answers them, unless the run was cancelled (a user's Cancel, or
    # QGIS quitting: a new query then would add a layer and make QGIS ask to save the project)
    dock._typed_after_run = True
    dock._typed_resume(SimpleNamespace(was_cancelled=True, request="tiles", params={}))
    assert not dock._typing_timer.isActive() and not dock._typed_after_run
    dock._typed_after_run = True
    dock._typed_resume(SimpleNamespace(was_cancelled=False, request="tiles", params={}))
    assert dock._typing_timer.isActive()  # an ended run: the typed phrases are answered now
    dock._typing_timer.stop()
