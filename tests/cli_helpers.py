"""Running the ``geoalign`` CLI in-process from tests, and the contract for bad input."""

from __future__ import annotations

from pathlib import Path

from geoalign_core.cli import main


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_bad(capsys, args, outdir: Path, match: str) -> str:
    before = set(outdir.rglob("*"))
    rc, out, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert rc == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]
    assert set(outdir.rglob("*")) == before, "something was written"
    return lines[0]
