"""Packaging: one version source, LICENSE / CHANGELOG / CITATION, the plugins.xml, and the wheel
installed into a fresh virtual environment (`pip install geoalign` from the built wheel).

The version lives in ``geoalign_core/__init__.py`` only; the wheel (setuptools' dynamic version),
``geoalign --version`` and the plugin zip's metadata.txt (stamped by package.py) must all say it.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest
import tomllib
import yaml
from generate import ROOT
from timeouts import scaled

from geoalign_core import __version__

pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", **extra)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """make plugin's zip (with the wheel inside) and a plugins.xml for it."""
    out = tmp_path_factory.mktemp("dist")
    zip_path, xml = out / "geoalign_qgis.zip", out / "plugins.xml"
    subprocess.run([sys.executable, str(ROOT / "geoalign_qgis" / "package.py"), "--out", str(zip_path), "--quiet",
                    "--plugins-xml", str(xml), "--download-url", "https://example.org/qgis/geoalign_qgis.zip"],
                   check=True, timeout=scaled(300))
    with zipfile.ZipFile(zip_path) as zf:
        whl = next(n for n in zf.namelist() if n.endswith(".whl"))
        (out / Path(whl).name).write_bytes(zf.read(whl))
    return {"zip": zip_path, "xml": xml, "wheel": out / Path(whl).name}


def test_the_version_is_written_once():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "geoalign_core.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    plugin_meta = (ROOT / "geoalign_qgis" / "metadata.txt").read_text()
    assert not re.search(r"^version\s*=", plugin_meta, re.M)
    assert not (ROOT / "metadata.txt").exists()  # the plugin's metadata lives in the plugin folder
    assert not re.search(r"^version:", (ROOT / "CITATION.cff").read_text(), re.M)
    for name in ("LICENSE", "CHANGELOG.md", "CITATION.cff", "geoalign_core/py.typed"):
        assert (ROOT / name).is_file(), name
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert "2603.09566" in citation["preferred-citation"]["url"]
    assert all(a.get("family-names") for a in citation["preferred-citation"]["authors"])  # the paper's authors
    assert "example.org" not in (ROOT / "CITATION.cff").read_text()  # no placeholder address
    assert not (ROOT / "training").exists() and (ROOT / "geoalign_core" / "training" / "configs").is_dir()
    out = subprocess.run([sys.executable, "-m", "geoalign_core.cli", "--version"], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == f"geoalign {__version__}"


def test_wheel_zip_and_plugins_xml_carry_the_version_and_license(built):
    wheel = built["wheel"]
    assert wheel.name == f"geoalign-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        meta = whl.read(f"geoalign-{__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {__version__}\n" in meta and "License-Expression: Apache-2.0" in meta
    assert f"geoalign-{__version__}.dist-info/licenses/LICENSE" in names
    assert "geoalign_core/py.typed" in names
    # the training code ships under the geoalign namespace (no top-level "training" package), configs included
    assert not any(n.startswith("training/") for n in names)
    assert "geoalign_core/training/configs/demo_stage1.yaml" in names
    # everything beside the bundled weights (the demo model's card included) and the archs ships
    for folder in ("geoalign_core/weights", "geoalign_core/archs"):
        for f in (ROOT / folder).iterdir():
            if f.is_file():
                assert f"{folder}/{f.name}" in names, f"{folder}/{f.name} is not in the wheel"
    with zipfile.ZipFile(built["zip"]) as zf:
        assert zf.read("geoalign_qgis/LICENSE") == (ROOT / "LICENSE").read_bytes()
        cp = configparser.ConfigParser(interpolation=None)
        cp.optionxform = str
        cp.read_string(zf.read("geoalign_qgis/metadata.txt").decode())
    assert cp["general"]["version"] == __version__
    plugin = ElementTree.parse(built["xml"]).getroot().find("pyqgis_plugin")
    assert plugin is not None and plugin.get("version") == __version__ and plugin.get("name") == "GeoAlign"
    assert plugin.findtext("download_url") == "https://example.org/qgis/geoalign_qgis.zip"
    assert plugin.findtext("file_name") == "geoalign_qgis.zip"
    assert plugin.findtext("qgis_maximum_version") == cp["general"]["qgisMaximumVersion"] == "3.99"


def test_the_wheel_installs_and_runs_in_a_fresh_venv(built, tmp_path):
    """A new venv (no system site-packages, no checkout on the path): pip installs the wheel, resolving
    its dependencies against those already installed for this interpreter (offline: --no-index);
    `geoalign` starts and finds the bundled demo model inside the installed package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=scaled(120))
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies (torch, rasterio, ...) of this interpreter, as plain path entries: the editable
    # install of the checkout (a .pth inside them) is not activated; sys.path's order (the venv's first)
    deps = [sysconfig.get_paths()["purelib"], *(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))]
    (site / "_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    env = clean_env()
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "-q",
                          "--disable-pip-version-check", str(built["wheel"])],
                         capture_output=True, text=True, env=env, timeout=scaled(300))
    assert pip.returncode == 0, pip.stderr[-2000:]
    geoalign = venv / "bin" / "geoalign"
    out = subprocess.run([str(geoalign), "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"geoalign {__version__}", out.stderr
    probe = ("import geoalign_core, geoalign_core.zoo as z; "
             "print(geoalign_core.__file__, z.weights_path(z.ZOO['geoalign-demo']))")
    where = subprocess.run([str(py), "-c", probe],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.split()
    assert all(p.startswith(str(site)) for p in where), where  # the installed copy, not the checkout
    assert Path(where[1]).is_file()
    listing = subprocess.run([str(geoalign), "models", "list"], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=scaled(120))
    assert listing.returncode == 0, listing.stderr
    demo = next(ln for ln in listing.stdout.splitlines() if ln.startswith("geoalign-demo "))
    assert demo.split()[2] == "yes" and demo.rstrip().endswith("bundled")  # available offline, from the wheel


def test_no_module_is_over_500_lines():
    # one concept per module: a module that grows past this is split, not stretched
    long = {str(p.relative_to(ROOT)): n for folder in ("geoalign_core", "geoalign_qgis")
            for p in (ROOT / folder).rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, long
