#!/usr/bin/env python3
"""Build the installable plugin zip (QGIS: Plugins > Install from ZIP).

    .venv/bin/python geoalign_qgis/package.py --out dist/geoalign_qgis.zip   # or: make plugin

The zip holds one folder, ``geoalign_qgis/``, with ``metadata.txt`` (the plugin folder's own,
stamped with ``version`` from ``geoalign_core/__init__.py`` -- the one version source -- and
``changelog`` from that version's section of CHANGELOG.md), ``LICENSE``, ``__init__.py``
(classFactory), ``icon.svg``, the plugin code, and
``core/`` (geoalign_core's engine protocol, parameter sets and defaults: :mod:`geoalign_qgis.protocol`),
and ``wheels/geoalign-<version>-py3-none-any.whl``: the GeoAlign package of the
same version, which the plugin's one-click set-up installs into a separate environment for
the engine process (QGIS's own Python never gets it). Building the wheel needs a Python with
pip and setuptools (the project's .venv); ``--no-wheel`` builds the plugin alone.

``--plugins-xml PATH --download-url URL`` also writes the ``plugins.xml`` of a custom plugin
repository (QGIS: Plugins > Manage and Install Plugins > Settings > Add...) that offers this
zip, published at URL; QGIS then offers its updates like those of the official repository.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FOLDER = "geoalign_qgis"
METADATA = HERE / "metadata.txt"
CHANGELOG = ROOT / "CHANGELOG.md"
LICENSE = ROOT / "LICENSE"
STAMPED_KEYS = ("version", "changelog", "email")  # written into the zip's metadata.txt, never into the source one
EMAIL_VAR = "GEOALIGN_PLUGIN_EMAIL"
PLACEHOLDER_DOMAINS = ("example.org", "example.com", "example.net", "localhost")
REQUIRED_KEYS = (
    "name", "description", "about", "author", "repository", "tracker", "license",
    "qgisMinimumVersion", "qgisMaximumVersion", "hasProcessingProvider", "icon",
)
INCLUDE_SUFFIXES = {".py", ".svg", ".png", ".qml", ".ui", ".txt", ".md"}
EXCLUDE_NAMES = {"package.py"}
EXCLUDE_DIRS = {"__pycache__", "tests", ".pytest_cache", "wheels"}
#: geoalign_core's protocol, parameter sets and defaults (standard library only), shipped as geoalign_qgis/core/:
#: the plugin takes its constants from them (geoalign_qgis/protocol.py), not from copies
SHIPPED_CORE = ("defaults.py", "params.py", "engine/__init__.py", "engine/protocol.py")
CORE_INIT = '"""geoalign_core\'s protocol, parameter sets and defaults, as the plugin\'s zip ships them."""\n'
# what the wheel is built from (copied to a temporary folder: the build leaves nothing in the checkout)
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "geoalign_core", "geoalign_qgis")


def version() -> str:
    """``geoalign_core.__version__``, read without importing the package (the one version source)."""
    tree = ast.parse((ROOT / "geoalign_core" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise SystemExit("error: geoalign_core/__init__.py defines no __version__")


def changelog(ver: str, path: Path = CHANGELOG) -> str:
    """The bullet points of CHANGELOG.md's section for ``ver`` (else [Unreleased]), as QGIS shows them."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    sections = dict(re.findall(r"^## \[([^\]]+)\][^\n]*\n(.*?)(?=^## \[|\Z)", text, flags=re.M | re.S))
    body = sections.get(ver) or sections.get("Unreleased") or ""
    items = [" ".join(b.split()).rstrip(".") for b in re.findall(r"^- (.*?)(?=^- |^#|\Z)", body, flags=re.M | re.S)]
    if not items:
        raise SystemExit(f"error: {path} has no entries for version {ver} (nor [Unreleased])")
    return f"{ver}: " + "; ".join(items)


def read_metadata(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # keep key case (qgisMinimumVersion)
    cp.read(path, encoding="utf-8")
    if not cp.has_section("general"):
        raise SystemExit(f"error: {path} has no [general] section")
    stamped = [k for k in STAMPED_KEYS if cp.has_option("general", k)]
    if stamped:
        raise SystemExit(f"error: {path} sets {', '.join(stamped)}: these are stamped into the zip from "
                         "geoalign_core/__init__.py and CHANGELOG.md (one version source)")
    missing = [k for k in REQUIRED_KEYS if not cp.get("general", k, fallback="").strip()]
    if missing:
        raise SystemExit(f"error: {path} lacks {', '.join(missing)}")
    icon = cp.get("general", "icon")
    if not (HERE / icon).is_file():
        raise SystemExit(f"error: metadata icon {icon} is not in {HERE}")
    return cp


def check_email(email: str) -> str:
    """A real-looking address (plugins.qgis.org shows it to users): not a placeholder domain."""
    email = email.strip()
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise SystemExit(f"error: {email!r} is not an e-mail address")
    if email.rsplit("@", 1)[1].lower() in PLACEHOLDER_DOMAINS:
        raise SystemExit(f"error: {email} is a placeholder address: give the maintainer's real one")
    return email


def stamped_metadata(path: Path, email: str | None = None) -> str:
    """The zip's metadata.txt: the plugin folder's, with ``version``, ``changelog`` and ``email`` added."""
    cp = read_metadata(path)
    ver = version()
    cp.set("general", "version", ver)
    cp.set("general", "changelog", changelog(ver))
    if email:
        cp.set("general", "email", check_email(email))
    buf = io.StringIO()
    cp.write(buf)
    return buf.getvalue()


def plugins_xml(metadata: str, download_url: str, file_name: str) -> str:
    """A QGIS plugin repository (``plugins.xml``) offering one zip, from the zip's own metadata."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read_string(metadata)
    g = cp["general"]
    fields = {
        "description": g["description"], "about": g["about"], "version": g["version"],
        "qgis_minimum_version": g["qgisMinimumVersion"], "qgis_maximum_version": g["qgisMaximumVersion"],
        "homepage": g.get("homepage", ""), "file_name": file_name, "icon": g["icon"],
        "author_name": g["author"], "download_url": download_url, "repository": g["repository"],
        "tracker": g["tracker"], "tags": g.get("tags", ""), "experimental": g.get("experimental", "False"),
        "deprecated": g.get("deprecated", "False"), "server": g.get("server", "False"),
        "changelog": g.get("changelog", ""),
    }
    body = "".join(f"    <{k}>{escape(v)}</{k}>\n" for k, v in fields.items())
    name = escape(g["name"], {'"': "&quot;"})
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<plugins>\n'
            f'  <pyqgis_plugin name="{name}" version="{escape(g["version"])}" plugin_id="{FOLDER}">\n'
            f"{body}  </pyqgis_plugin>\n</plugins>\n")


def plugin_files() -> list[Path]:
    files = []
    for p in sorted(HERE.rglob("*")):
        rel = p.relative_to(HERE)
        if not p.is_file() or any(part in EXCLUDE_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if p.name in EXCLUDE_NAMES or p.suffix not in INCLUDE_SUFFIXES or p.name == "metadata.txt":
            continue
        files.append(p)
    return files


def build_wheel(folder: Path, python: str = sys.executable) -> Path:
    """``pip wheel`` of this checkout (no dependencies) into ``folder``; returns the wheel."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "wheels", "build", "dist")
    with tempfile.TemporaryDirectory(prefix="geoalign-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in WHEEL_SOURCES:
            p = ROOT / name
            if p.is_dir():
                shutil.copytree(p, src / name, ignore=ignore)
            elif p.is_file():
                shutil.copy2(p, src / name)
        cmd = [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
               "-q", "-w", str(folder), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise SystemExit(f"error: building the geoalign wheel failed with {python}: {lines[-1] if lines else ''}"
                             " (use the project's .venv: make plugin)")
    wheels = sorted(folder.glob("geoalign-*.whl"))
    if not wheels:
        raise SystemExit("error: pip wheel produced no geoalign wheel")
    return wheels[-1]


def build(out: Path, metadata: Path = METADATA, wheel: bool = True, email: str | None = None) -> list[str]:
    meta_text = stamped_metadata(metadata, email)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    names = []
    with tempfile.TemporaryDirectory(prefix="geoalign-plugin-") as wdir, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{FOLDER}/metadata.txt", meta_text)
        zf.write(LICENSE, f"{FOLDER}/LICENSE")
        names += [f"{FOLDER}/metadata.txt", f"{FOLDER}/LICENSE"]
        for p in plugin_files():
            arc = f"{FOLDER}/{p.relative_to(HERE).as_posix()}"
            zf.write(p, arc)
            names.append(arc)
        zf.writestr(f"{FOLDER}/core/__init__.py", CORE_INIT)
        names.append(f"{FOLDER}/core/__init__.py")
        for rel in SHIPPED_CORE:
            zf.write(ROOT / "geoalign_core" / rel, f"{FOLDER}/core/{rel}")
            names.append(f"{FOLDER}/core/{rel}")
        if wheel:
            whl = build_wheel(Path(wdir))
            arc = f"{FOLDER}/wheels/{whl.name}"
            zf.write(whl, arc, compress_type=zipfile.ZIP_STORED)  # a wheel is a zip already
            names.append(arc)
    for needed in ("__init__.py", "icon.svg"):
        if f"{FOLDER}/{needed}" not in names:
            tmp.unlink()
            raise SystemExit(f"error: {needed} missing from the plugin folder")
    tmp.replace(out)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist" / "geoalign_qgis.zip")
    ap.add_argument("--metadata", type=Path, default=METADATA)
    ap.add_argument("--no-wheel", action="store_true", help="leave the GeoAlign wheel out (no one-click set-up)")
    ap.add_argument("--plugins-xml", type=Path, help="also write a custom plugin repository's plugins.xml here")
    ap.add_argument("--download-url", help="where the zip will be published (the plugins.xml's download_url)")
    ap.add_argument("--email", default=os.environ.get(EMAIL_VAR) or None,
                    help=f"the maintainer's e-mail for metadata.txt (default: ${EMAIL_VAR})")
    ap.add_argument("--release", action="store_true",
                    help="a zip for plugins.qgis.org: refuses to build without a real --email")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.plugins_xml and not args.download_url:
        ap.error("--plugins-xml needs --download-url (the zip's published URL)")
    if args.release and not args.email:
        raise SystemExit(f"error: --release needs the maintainer's e-mail (--email or ${EMAIL_VAR})")
    names = build(args.out, args.metadata, wheel=not args.no_wheel, email=args.email)
    if args.plugins_xml:
        args.plugins_xml.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(args.out) as zf:
            meta = zf.read(f"{FOLDER}/metadata.txt").decode("utf-8")
        args.plugins_xml.write_text(plugins_xml(meta, args.download_url, args.out.name), encoding="utf-8")
    if not args.quiet:
        print(f"{args.out}: {len(names)} files")
        for n in names:
            print(f"  {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
