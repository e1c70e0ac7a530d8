"""Every GeoAlign Processing algorithm through processing.run (pytest-qgis' qgis_processing)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("qgis.core")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)
from qgis_helpers import TEST_MODEL  # noqa: E402

pytestmark = pytest.mark.qgis


@pytest.fixture(scope="module")
def provider(qgis_processing):
    from geoalign_qgis.processing import GeoAlignProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("geoalign") is None:
        registry.addProvider(GeoAlignProvider())
    yield registry.providerById("geoalign")
    registry.removeProvider("geoalign")


@pytest.fixture(scope="module")
def raster(crop) -> str:
    return str(crop)


def vector(path) -> QgsVectorLayer:
    layer = QgsVectorLayer(str(path), "out", "ogr")
    assert layer.isValid(), path
    return layer


def test_provider_lists_its_algorithms(provider):
    algs = {a.id(): a for a in provider.algorithms()}
    assert set(algs) == {"geoalign:tileclassify", "geoalign:findobjects", "geoalign:matchregions",
                         "geoalign:heatmap", "geoalign:indexraster", "geoalign:findsimilar", "geoalign:finetune"}
    for alg in algs.values():
        ok, msg = alg.canExecute()
        assert ok, msg
        assert alg.shortHelpString()
        assert alg.group() == ("Models" if alg.name() == "finetune" else "Find by text")
        # batch mode / model builder create fresh instances with their own parameters
        clone = alg.create()
        assert clone is not alg and clone.parameterDefinition("INPUT") is not None


def test_tile_classify(provider, raster, tmp_path):
    import processing

    out = tmp_path / "tiles.gpkg"
    res = processing.run("geoalign:tileclassify", {
        "INPUT": raster, "MODEL": TEST_MODEL, "CLASSES": "car, building,water", "TOP_K": 2,
        "DEVICE": 1, "OUTPUT": str(out)})
    layer = vector(res["OUTPUT"])
    assert layer.featureCount() == 4  # 224 px, 112 px tiles side by side (default overlap 0, as the CLI)
    assert layer.crs() == QgsRasterLayer(raster).crs()
    assert {"label", "score", "top_k"} <= {f.name() for f in layer.fields()}
    assert {f["label"] for f in layer.getFeatures()} <= {"car", "building", "water", "none of these"}


def test_loaded_outputs_are_styled_and_named(provider, raster, tmp_path):
    """Run and load, as the toolbox does: tiles categorised by class and named after raster and
    classes; a score heatmap with the transparent-to-warm ramp; both marked as GeoAlign results."""
    import processing
    from qgis.core import QgsCategorizedSymbolRenderer

    from geoalign_qgis import layers

    project = QgsProject.instance()
    before = set(project.mapLayers())
    processing.runAndLoadResults("geoalign:tileclassify", {
        "INPUT": raster, "MODEL": TEST_MODEL, "CLASSES": "car, building,water", "DEVICE": 1,
        "OUTPUT": str(tmp_path / "tiles.gpkg")})
    processing.runAndLoadResults("geoalign:heatmap", {
        "INPUT": raster, "MODEL": TEST_MODEL, "PHRASE": "car", "DEVICE": 1, "OUTPUT": str(tmp_path / "heat.tif")})
    new = [project.mapLayer(i) for i in set(project.mapLayers()) - before]
    try:
        tiles = next(lyr for lyr in new if isinstance(lyr, QgsVectorLayer))
        heat = next(lyr for lyr in new if isinstance(lyr, QgsRasterLayer))
        assert tiles.name() == "crop tiles: car, building, water"
        renderer = tiles.renderer()
        assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "label"
        counts = sum(int(c.label().rsplit("(", 1)[1].rstrip(")")) for c in renderer.categories())
        assert counts == tiles.featureCount() == 4
        assert all(c.symbol().color().alpha() < 255 for c in renderer.categories())  # semi-transparent
        assert heat.name() == "heatmap score: car (crop)"
        shader = heat.renderer().shader().rasterShaderFunction()
        assert shader.minimumValue() == 0.0 and shader.maximumValue() == 1.0
        items = shader.colorRampItemList()
        assert items[0].color.alpha() == 0 and items[-1].color.alpha() > 200
        assert all(layers.is_output(lyr) for lyr in (tiles, heat))
    finally:
        project.removeMapLayers([lyr.id() for lyr in new])


def test_find_objects_with_extent_and_regions(provider, raster, tmp_path):
    import processing

    rlayer = QgsRasterLayer(raster, "r")
    e = rlayer.extent()
    out = tmp_path / "find.gpkg"
    extent = f"{e.xMinimum()},{e.xMinimum() + e.width() / 2},{e.yMinimum()},{e.yMaximum()} [EPSG:32633]"
    res = processing.run("geoalign:findobjects", {
        "INPUT": raster, "MODEL": TEST_MODEL, "PHRASES": "red car\nswimming pool", "MIN_SCORE": 0.0,
        "MAX_RESULTS": 3, "EXTENT": extent, "OUTPUT": str(out)})
    layer = vector(res["OUTPUT"])
    assert 0 < layer.featureCount() <= 6
    assert [f.name() for f in layer.fields()][-3:] == ["phrase", "score", "rank"]
    alg = QgsApplication.processingRegistry().algorithmById("geoalign:findobjects")
    assert alg.parameterDefinition("REFINE").defaultValue() is True  # as the CLI
    plain = processing.run("geoalign:findobjects", {
        "INPUT": raster, "MODEL": TEST_MODEL, "PHRASES": "red car", "MIN_SCORE": 0.0, "MAX_RESULTS": 3,
        "REFINE": False, "EXTENT": extent, "OUTPUT": str(tmp_path / "find_plain.gpkg")})
    assert vector(plain["OUTPUT"]).featureCount() == 3
    for f in layer.getFeatures():  # restricted to the left half
        assert f.geometry().boundingBox().xMinimum() < e.xMinimum() + e.width() / 2 + 1e-6

    # search only inside regions given in another CRS (EPSG:4326): reprojected by QGIS
    fractions = [(0.05, 0.05, 0.45, 0.45), (0.5, 0.5, 0.95, 0.8)]
    regions = polygons_4326(rlayer, fractions)
    res = processing.run("geoalign:findobjects", {
        "INPUT": raster, "MODEL": TEST_MODEL, "PHRASES": "red car", "REGIONS": regions, "MIN_SCORE": 0.0,
        "MAX_RESULTS": 20, "OUTPUT": str(tmp_path / "find_regions.gpkg")})
    found = vector(res["OUTPUT"])
    assert found.featureCount() > 2  # objects inside the regions, not the two regions themselves
    w, h = e.width(), e.height()
    rects = [QgsRectangle(e.xMinimum() + x0 * w, e.yMinimum() + y0 * h, e.xMinimum() + x1 * w, e.yMinimum() + y1 * h)
             for x0, y0, x1, y1 in fractions]
    for f in found.getFeatures():  # every box has its centre in a region (up to the 4326 round trip)
        c = f.geometry().boundingBox().center()
        assert any(r.buffered(0.5).contains(c) for r in rects), c.toString()


def polygons_4326(rlayer: QgsRasterLayer, fractions) -> QgsVectorLayer:
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", "regions", "memory")
    ct = QgsCoordinateTransform(rlayer.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    e = rlayer.extent()
    feats = []
    for i, (x0, y0, x1, y1) in enumerate(fractions):
        from qgis.core import QgsRectangle

        rect = QgsRectangle(e.xMinimum() + x0 * e.width(), e.yMinimum() + y0 * e.height(),
                            e.xMinimum() + x1 * e.width(), e.yMinimum() + y1 * e.height())
        geom = QgsGeometry.fromRect(rect)
        geom.transform(ct)
        f = QgsFeature(layer.fields())
        f.setGeometry(geom)
        f.setAttributes([f"r{i + 1}"])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_match_regions(provider, raster, tmp_path):
    import processing

    rlayer = QgsRasterLayer(raster, "r")
    regions = polygons_4326(rlayer, [(0.1, 0.1, 0.4, 0.4), (0.5, 0.5, 0.9, 0.8)])
    res = processing.run("geoalign:matchregions", {
        "INPUT": raster, "REGIONS": regions, "PHRASES": "building; tree", "MODEL": TEST_MODEL,
        "OUTPUT": str(tmp_path / "regions.gpkg")})
    layer = vector(res["OUTPUT"])
    assert layer.featureCount() == 2 and layer.crs() == rlayer.crs()
    names = [f.name() for f in layer.fields()]
    assert {"name", "best_phrase", "score", "building", "tree"} <= set(names)
    for f in layer.getFeatures():
        assert f["best_phrase"] in ("building", "tree", "none of these")
        assert f["score"] == pytest.approx(max(f["building"], f["tree"]))
        assert rlayer.extent().contains(f.geometry().boundingBox().center())


def test_heatmap_with_a_checkpoint_file(provider, raster, tmp_path):
    import processing

    from geoalign_core import load_model, save_model
    from geoalign_core.card import card_path

    ckpt = save_model(load_model(TEST_MODEL, device="cpu"), tmp_path / "tiny.safetensors")
    shutil.copy(card_path(TEST_MODEL), card_path(ckpt))  # its card travels with it: calibrated scores
    out = tmp_path / "heat.tif"
    res = processing.run("geoalign:heatmap", {
        "INPUT": raster, "PHRASE": "swimming pool", "MODEL": str(ckpt), "OUTPUT": str(out)})
    assert res["OUTPUT"] == str(out) and out.is_file()
    heat = QgsRasterLayer(str(out), "heat")
    src = QgsRasterLayer(raster, "r")
    assert heat.isValid() and heat.crs() == src.crs()
    assert heat.extent().toString(2) == src.extent().toString(2)
    from geoalign_qgis.layers import style_heatmap

    assert isinstance(style_heatmap(heat, score=False), QgsSingleBandPseudoColorRenderer)
    stats = heat.dataProvider().bandStatistics(1)
    assert 0.0 <= stats.minimumValue <= stats.maximumValue <= 1.0  # the default values: scores


def test_bad_input_is_a_processing_error(provider, raster, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="unknown model"):
        processing.run("geoalign:findobjects", {
            "INPUT": raster, "MODEL": "no-such-model", "PHRASES": "car",
            "OUTPUT": str(tmp_path / "x.gpkg")})


def test_find_objects_in_a_processing_model(provider, raster, tmp_path):
    """The model builder's way: a model whose child is geoalign:findobjects."""
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("find cars", "tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("raster", "Raster"),
                            QgsProcessingModelParameter("raster"))
    child = QgsProcessingModelChildAlgorithm("geoalign:findobjects")
    child.setChildId("find")
    static = QgsProcessingModelChildParameterSource.fromStaticValue
    child.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("raster")])
    child.addParameterSources("MODEL", [static(TEST_MODEL)])
    child.addParameterSources("PHRASES", [static("red car")])
    child.addParameterSources("MIN_SCORE", [static(0.0)])
    child.addParameterSources("MAX_RESULTS", [static(2)])
    output = QgsProcessingModelOutput("matches")
    output.setChildOutputName("OUTPUT")
    child.setModelOutputs({"matches": output})
    model.addChildAlgorithm(child)
    model.updateDestinationParameters()

    out = tmp_path / "model.gpkg"
    res = processing.run(model, {"raster": raster, "find:matches": str(out)})
    layer = vector(res["find:matches"])
    assert 0 < layer.featureCount() <= 2


class Feedback:
    """What an algorithm told Processing: info lines and the progress, last value included."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class _F(QgsProcessingFeedback):
            def __init__(self) -> None:
                super().__init__()
                self.infos: list[str] = []
                self.progress_values: list[float] = []
                self.progressChanged.connect(self.progress_values.append)

            def pushInfo(self, info: str) -> None:  # noqa: N802
                self.infos.append(info)
                super().pushInfo(info)

        return _F()


def test_index_then_find_and_similar_use_it_with_object_size(provider, tmp_path):
    import processing
    from qgis_helpers import sample_crop

    from geoalign_qgis.indexes import existing_index
    from geoalign_qgis.tasks import profile_dir

    path = sample_crop(tmp_path / "idx.tif", size=224)
    fb = Feedback()
    res = processing.run("geoalign:indexraster", {"INPUT": str(path), "MODEL": TEST_MODEL, "DEVICE": 1}, feedback=fb)
    index = existing_index(str(path), TEST_MODEL, profile_dir())  # where the dock looks for it
    # no saved project: in the plugin's folder of the profile, not beside the raster
    assert index is not None and res["INDEX"] == str(index) and not list(tmp_path.glob("*.parquet"))
    assert fb.progress_values and fb.progress_values[-1] == 100  # never 0 % after finishing
    fb = Feedback()
    res = processing.run("geoalign:findobjects", {
        "INPUT": str(path), "MODEL": TEST_MODEL, "PHRASES": "car", "MIN_SCORE": 0.0, "MAX_RESULTS": 3,
        "OBJECT_SIZE": 5.0, "OUTPUT": str(tmp_path / "f.gpkg")}, feedback=fb)
    assert vector(res["OUTPUT"]).featureCount() >= 1
    assert any("answered from the raster's index" in i for i in fb.infos), fb.infos
    rlayer = QgsRasterLayer(str(path), "r")
    examples = polygons_4326(rlayer, [(0.1, 0.1, 0.2, 0.2)])
    res = processing.run("geoalign:findsimilar", {
        "INPUT": str(path), "MODEL": TEST_MODEL, "EXAMPLES": examples, "MAX_RESULTS": 5,
        "OUTPUT": str(tmp_path / "s.gpkg")})
    assert vector(res["OUTPUT"]).featureCount() >= 1


def test_a_geoalign_heatmap_is_not_taken_as_imagery(provider, raster, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    from geoalign_qgis import layers

    heat = QgsRasterLayer(raster, "heatmap score: car (r)")
    layers.mark_output(heat)
    QgsProject.instance().addMapLayer(heat)
    try:
        with pytest.raises(QgsProcessingException, match="is a GeoAlign result"):
            processing.run("geoalign:heatmap", {"INPUT": heat, "MODEL": TEST_MODEL, "PHRASE": "car",
                                                "OUTPUT": str(tmp_path / "h.tif")})
    finally:
        QgsProject.instance().removeMapLayer(heat.id())


def test_find_objects_in_a_collection_index(provider, tmp_path):
    """A collection index (geoalign index A.tif B.tif --out DIR) as Find objects' input, in place of the raster:
    one layer over both scenes, with a scene field."""
    import os
    import subprocess
    import sys

    import processing
    from qgis_helpers import ROOT, sample_crop

    a = sample_crop(tmp_path / "a.tif", size=224)
    b = sample_crop(tmp_path / "b.tif", size=224, col=0, row=0)
    folder = tmp_path / "city"
    subprocess.run([sys.executable, "-m", "geoalign_core.cli", "index", str(a), str(b), "--out", str(folder),
                    "--model", TEST_MODEL, "--device", "cpu", "--quiet"], check=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    alg = QgsApplication.processingRegistry().algorithmById("geoalign:findobjects")
    index_param = alg.parameterDefinition("INDEX")
    assert index_param.type() == "file" and index_param.behavior() == index_param.Folder
    assert alg.parameterDefinition("INPUT").flags() & index_param.FlagOptional
    _collection_refusals(folder, a, tmp_path)
    fb = Feedback()
    res = processing.run("geoalign:findobjects", {  # the default model: the one the collection was built with
        "INDEX": str(folder), "PHRASES": "car\nswimming pool", "MIN_SCORE": 0.0,
        "MAX_RESULTS": 4, "OUTPUT": str(tmp_path / "city.gpkg")}, feedback=fb)
    layer = vector(res["OUTPUT"])
    assert layer.featureCount() == 8  # 4 per phrase, over both scenes
    assert "scene" in [f.name() for f in layer.fields()]
    assert {f["scene"] for f in layer.getFeatures()} <= {"a", "b"}
    assert layer.crs() == QgsCoordinateReferenceSystem("EPSG:32633")  # the scenes' common CRS
    assert any("answered from the collection index" in i for i in fb.infos), fb.infos
    part = folder / "parts" / "a.parquet"  # one scene's index, with its raster
    res = processing.run("geoalign:findobjects", {
        "INDEX": str(part), "INPUT": str(a), "MODEL": TEST_MODEL, "PHRASES": "car", "MIN_SCORE": 0.0,
        "MAX_RESULTS": 3, "REFINE": False, "OUTPUT": str(tmp_path / "a.gpkg")})
    assert vector(res["OUTPUT"]).featureCount() == 3


def _collection_refusals(folder, a, tmp_path) -> None:
    """What Find objects refuses with a collection index. In a function of its own: a caught error's traceback
    keeps its frames' locals alive until the process ends, and a QGIS layer among them would then be destroyed
    after QGIS exited (a crash at exit, exit code 139)."""
    import processing
    from qgis.core import QgsProcessingException

    # a collection is searched whole: a raster (or an extent, regions) with it is refused, as is nothing at all
    with pytest.raises(QgsProcessingException, match="searched whole"):
        processing.run("geoalign:findobjects", {"INDEX": str(folder), "INPUT": str(a), "MODEL": TEST_MODEL,
                                                "PHRASES": "car", "OUTPUT": str(tmp_path / "x.gpkg")})
    with pytest.raises(QgsProcessingException, match="choose a raster, or a collection index"):
        processing.run("geoalign:findobjects", {"MODEL": TEST_MODEL, "PHRASES": "car",
                                                "OUTPUT": str(tmp_path / "y.gpkg")})
    with pytest.raises(QgsProcessingException, match="manifest"):  # a folder that is not a collection
        processing.run("geoalign:findobjects", {"INDEX": str(tmp_path), "MODEL": TEST_MODEL, "PHRASES": "car",
                                                "OUTPUT": str(tmp_path / "z.gpkg")})
