"""The documentation site: strict build, generated CLI reference vs the parsers, runnable examples,
and the built pages rendered by headless Chromium.

* ``mkdocs build --strict`` (what ``make docs`` runs): a warning, a broken internal link or anchor
  fails it.
* Every command has a page under docs/cli/ carrying its generated reference, and the built page
  names every option its parser has; every ``--option`` a page names in its own text exists in the
  parser of the command it is given to (the other way round).
* The examples marked ``<!-- run -->`` on the Get started and command pages are run on the sample
  scene: exit status 0, and each shown output line has the shape of the real one (the text before
  the first ';', numbers and paths aside), and the files they report writing exist and are not empty.
* Headless Chromium opens the built home page and QGIS guide: the pages render, with their images
  loaded (``GEOALIGN_DOCS_SCREENSHOTS=DIR`` also keeps screenshots there).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from generate import ROOT
from timeouts import scaled

sys.path.insert(0, str(ROOT / "docs" / "hooks"))
import cli_reference  # noqa: E402  (the mkdocs hook: the same generator the site uses)

DOCS = ROOT / "docs"
CLI = DOCS / "cli"
PAGE = {"index": "index-command"}  # docs/cli/index.md is the section's overview
RUN_PAGES = [DOCS / "getting-started.md", *sorted(CLI.glob("*.md"))]
EXTERNAL = ("torchrun", "pip", "conda", "pytest", "mkdocs", "apt-get", "make", "python3", "chromium")


def page_of(command: str) -> Path:
    return CLI / f"{PAGE.get(command, command)}.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    return out


# ---------------------------------------------------------------------------- the CLI reference
def test_every_command_has_a_page_with_its_generated_reference(site):
    nav = (ROOT / "mkdocs.yml").read_text()
    for name, parser in cli_reference.commands().items():
        page = page_of(name)
        assert page.is_file(), f"geoalign {name} has no page {page.relative_to(ROOT)}"
        assert f"<!-- cli-reference: {name} -->" in page.read_text(), f"{page.name} lacks its generated reference"
        assert f"cli/{page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"
        html = (site / "cli" / page.with_suffix(".html").name).read_text()
        missing = [o for o in sorted(cli_reference.options(parser) - {"--help"}) if f"<code>{o}" not in html]
        assert not missing, f"the built page of geoalign {name} does not document {missing}"


_STARTS = re.compile(r"geoalign(?:_core\.cli)?\s+(?:--\S+\s+)*([a-z][a-z-]+)|(?:geoalign_core\.)?training\.train"
                     r"|(?<![\w-])("
                     + "|".join(map(re.escape, EXTERNAL)) + r")\b")


def _context(code: str, pos: int, default: str | None) -> str | None:
    """The command an option at ``pos`` of a piece of code is given to (``!prog`` for another program)."""
    ctx = default
    for m in _STARTS.finditer(code):
        if m.start() < pos:
            ctx = "train" if m.group(0) == "geoalign_core.training.train" else (m.group(1) or f"!{m.group(2)}")
    return ctx


def _named_options(text: str, default: str | None) -> list[tuple[str, str | None]]:
    """(option, command it is given to) for every ``--option`` in the page's own text: in a code
    block line or an inline code span, the ``geoalign X`` before it in the same line or span;
    elsewhere the page's command."""
    found = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if line.startswith("<!-- cli-reference"):
            continue
        pieces = [line] if fenced else re.findall(r"`([^`]*)`", line)
        for code in pieces:
            for opt in re.finditer(r"(?<![\w-])--[a-z][a-z0-9-]*", code):
                found.append((opt.group(0), _context(code, opt.start(), default)))
        if not fenced:
            prose = re.sub(r"`[^`]*`", "", line)
            found += [(o, default) for o in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", prose)]
    return found


def test_options_named_in_the_pages_exist_in_the_parsers():
    commands = cli_reference.commands()
    everything = set().union(*(cli_reference.options(p) for p in commands.values())) | {"--help", "--version"}
    bad = []
    for page in sorted(CLI.glob("*.md")):
        default = next((c for c in commands if page_of(c) == page), None)
        for opt, ctx in _named_options(page.read_text(), default):
            if ctx is not None and ctx.startswith("!"):
                continue  # another program's option (torchrun, pip, ...)
            known = cli_reference.options(commands[ctx]) | {"--help"} if ctx in commands else everything
            if opt not in known:
                bad.append(f"{page.name}: {opt} (geoalign {ctx or '*'})")
    assert not bad, "options named in the docs that the parsers do not have:\n" + "\n".join(bad)


def test_the_reference_is_what_the_parser_says():
    text = cli_reference.render("find")
    parser = cli_reference.commands()["find"]
    assert all(o in text for o in cli_reference.options(parser))
    assert parser.format_usage().split("usage: ")[1].split()[0:2] == ["geoalign", "find"]
    assert "--min-score S" in text and "| `PHRASE` |" in text


def test_readme_is_a_landing_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 10 * 1024
    assert "make demo" in readme and "make test" in readme and "docs/qgis_screenshot.png" in readme
    for target in re.findall(r"\]\(((?:docs/)?[^)#]+\.md)\)", readme):
        assert (ROOT / target).is_file(), target


# ---------------------------------------------------------------------------- examples that run
RUN_BLOCK = re.compile(r"^<!-- run -->\n```(console|python|bash)\n(.*?)^```", re.M | re.S)
NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def _shape(line: str) -> str:
    """The part of an output line an example promises: before the first ';', whitespace collapsed."""
    return " ".join(line.split(";")[0].split())


def _pattern(line: str) -> re.Pattern[str]:
    parts = []
    for tok in _shape(line).split(" "):
        if "/" in tok:
            parts.append(r"\S+")  # a path: where the cache or the checkout lives differs
        else:
            parts.append(re.escape(re.sub(NUMBER, "<N>", tok)).replace(re.escape("<N>"), NUMBER))
    return re.compile(" ".join(parts))


def _blocks() -> list[tuple[str, str, str]]:
    out = []
    for page in RUN_PAGES:
        for kind, body in RUN_BLOCK.findall(page.read_text()):
            out.append((page.relative_to(DOCS).as_posix(), kind, body))
    return out


def _console(body: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps and line.strip():
            steps[-1][1].append(line)
    return steps


def _check_outputs(stdout: str, cwd: Path) -> None:
    import pyogrio

    for path, layer in re.findall(r" to (\S+) \(layer '(\w+)'\)", stdout):
        info = pyogrio.read_info(cwd / path, layer=layer)
        assert info["features"] > 0, f"{path} layer {layer} is empty"
    for path in re.findall(r"heatmap to (\S+\.tif)", stdout):
        assert (cwd / path).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted({p for p, _, _ in _blocks()}))
def test_examples_run(page, tmp_path):
    blocks = [(k, b) for p, k, b in _blocks() if p == page]
    assert blocks
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    env = dict(os.environ, PYTHONPATH=str(ROOT), GEOALIGN_CACHE=str(tmp_path / "cache"))
    geoalign = [sys.executable, "-m", "geoalign_core.cli"]
    for kind, body in blocks:  # in page order, in one folder: a later example may use an earlier one's file
        if kind == "python":
            proc = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=scaled(300))
            assert proc.returncode == 0 and proc.stdout.strip(), f"{page}: {body}\n{proc.stderr[-3000:]}"
            continue
        for cmd, expected in _console(body) if kind == "console" else [(c, []) for c in body.splitlines() if c]:
            argv = shlex.split(cmd, comments=True)
            assert argv[0] == "geoalign", f"{page}: only geoalign commands are run: {cmd}"
            proc = subprocess.run(geoalign + argv[1:] + ["--quiet"] * (argv[1] not in ("models",)),
                                  cwd=tmp_path, env=env, capture_output=True, text=True, timeout=scaled(300))
            assert proc.returncode == 0, f"{page}: {cmd}\n{proc.stderr[-3000:]}"
            got = [_shape(ln) for ln in proc.stdout.splitlines()]
            for want in expected:
                assert any(_pattern(want).fullmatch(g) for g in got), \
                    f"{page}: {cmd}\nexpected a line shaped like {want!r}\ngot:\n{proc.stdout}"
            _check_outputs(proc.stdout, tmp_path)


# ---------------------------------------------------------------------------- the site in Chromium
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# opened beside the site: loads a page in a same-origin iframe and writes what it sees into the DOM
PROBE = """<!doctype html><html><body><iframe id="f" width="1280" height="900" src="PAGE"></iframe>
<pre id="out">pending</pre><script>
document.getElementById('f').onload = function () {
  var d = this.contentDocument;
  setTimeout(function () {
    var imgs = Array.from(d.querySelectorAll('article img'));
    document.getElementById('out').textContent = JSON.stringify({
      title: d.title, h1: (d.querySelector('article h1') || {}).textContent,
      nav: d.querySelectorAll('.md-nav__link').length,
      styled: getComputedStyle(d.querySelector('.md-header')).position,
      images: imgs.map(function (i) { return [i.getAttribute('src'), i.complete, i.naturalWidth]; })});
  }, 1500);
};
</script></body></html>"""


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]  # quiet server
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", site
    server.shutdown()
    server.server_close()


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={cwd / 'profile'}", "--virtual-time-budget=8000", *args],
                          capture_output=True, text=True, timeout=scaled(120), cwd=cwd)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (make system installs it)")
@pytest.mark.parametrize(("page", "title", "images"), [
    ("index.html", "GeoAlign", ["qgis_screenshot.png"]),
    ("qgis.html", "QGIS user guide", ["qgis_screenshot.png", "qgis_similar.png"]),
])
def test_site_renders_in_chromium(served, page, title, images, tmp_path):
    import json

    url, site = served
    probe = site / f"_probe_{page}"
    probe.write_text(PROBE.replace("PAGE", page))
    try:
        proc = _chromium("--dump-dom", f"{url}/{probe.name}", cwd=tmp_path)
    finally:
        probe.unlink()
    m = re.search(r'<pre id="out">(.*?)</pre>', proc.stdout, re.S)
    assert m and m.group(1) != "pending", proc.stderr[-2000:]
    seen = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert seen["h1"].strip().startswith(title) and seen["title"].startswith(title)
    assert seen["nav"] > 20 and seen["styled"] in ("sticky", "fixed")  # the theme's CSS applied
    loaded = {Path(src).name: (done and width > 0) for src, done, width in seen["images"]}
    for name in images:
        assert loaded.get(name), f"{page}: image {name} not loaded: {seen['images']}"
    shots = Path(os.environ.get("GEOALIGN_DOCS_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"docs_{Path(page).stem}.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,1600", f"{url}/{page}", cwd=tmp_path)
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
