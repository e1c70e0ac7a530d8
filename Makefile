# GeoAlign: two commands, `make demo` and `make test`. Both are idempotent.
SHELL := /bin/bash
SYS_PY := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.geoalign-installed
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup system demo test test-fast lint docs plugin sample clean-venv bench

setup: $(STAMP)

# QGIS (the desktop app, PyQGIS and the Python it is built for), Xvfb and Chromium (the docs test
# opens the built site headless) from Debian, only when missing.
system:
	@if ! $(SYS_PY) -c "import qgis.core" >/dev/null 2>&1 || ! command -v qgis >/dev/null \
			|| ! command -v xvfb-run >/dev/null || ! command -v chromium >/dev/null; then \
		echo "installing QGIS (desktop app + PyQGIS), Xvfb and Chromium from apt"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			qgis python3-qgis qgis-providers xvfb python3-venv chromium >/dev/null; \
	fi

$(STAMP): pyproject.toml | system
	@test -x $(PY) || $(SYS_PY) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PAIR)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/geoalign tile-classify sample_data/scene.tif --out demo_tiles.gpkg --overwrite

test: setup docs
	$(PY) -m pytest -q -p no:cacheprovider tests

# the quick loop while editing: everything but the tests marked slow (real QGIS, DDP, training runs)
test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# the documentation site (site/): strict, so a warning or a broken internal link fails the build
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

sample: setup
	$(PY) sample_data/make_sample.py --seed 0 --out sample_data

# the plugin zip, with the GeoAlign wheel its one-click set-up installs (built with the venv's pip)
plugin: setup
	$(PY) geoalign_qgis/package.py --out dist/geoalign_qgis.zip

bench: setup
	$(PY) benchmarks/bench_inference.py
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_cli.py
