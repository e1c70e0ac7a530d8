"""Claiming an output: "create unless it exists" as one atomic step, and a lock per output path.

Two runs that write the same new output must never both report success with one result lost.
A check for existence followed by a rename over the target is two steps (another run can create
the file in between), so:

* :func:`publish` moves a finished temporary file onto its target. Without ``overwrite`` it uses
  a hard link, which fails when the target exists (the check and the creation are one step); on a
  file system without hard links it reserves the name with an exclusive create first. With
  ``overwrite`` it renames over the target (the last run wins, each result whole).
* :func:`output_lock` takes an advisory lock (``flock``; on Windows ``msvcrt.locking``) on a
  hidden file beside the output, ``.<name>.lock``, removed when released. It guards outputs that
  take several steps (an index and its patch file, a prepare folder, a fine-tune folder, a
  GeoPackage layer added to an existing file) and long builds (two index builds into the same
  ``--out``: the second is refused at once). A lock dies with its process (kill -9 included),
  so a crashed run never blocks the next one. Re-entrant within one thread.

* :func:`check_output` / :func:`check_not_an_input` / :func:`output_format`: an output path checked
  before any work (a format its extension names, not an input, not existing without overwrite,
  a writable folder); re-exported by :mod:`geoalign_core.geo.writers`.

No heavy imports here: the CLI's input checks use it before the model stack loads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from os import PathLike
from pathlib import Path

from .errors import InputError

#: extension -> (format name, pyogrio driver or "parquet")
VECTOR_FORMATS: dict[str, tuple[str, str]] = {
    ".gpkg": ("GeoPackage", "GPKG"),
    ".geojson": ("GeoJSON", "GeoJSON"),
    ".json": ("GeoJSON", "GeoJSON"),
    ".fgb": ("FlatGeobuf", "FlatGeobuf"),
    ".shp": ("Shapefile", "ESRI Shapefile"),
    ".parquet": ("GeoParquet", "parquet"),
    ".geoparquet": ("GeoParquet", "parquet"),
    ".csv": ("CSV", "CSV"),
}
RASTER_FORMATS: dict[str, tuple[str, str]] = {".tif": ("GeoTIFF", "COG"), ".tiff": ("GeoTIFF", "COG")}
INDEX_FORMATS: dict[str, tuple[str, str]] = {".parquet": ("Parquet", "index")}  #: a scene index


def output_format(path: str | PathLike, formats: Mapping[str, tuple[str, str]]) -> tuple[str, str]:
    """``(format name, driver)`` for the extension of ``path``, or InputError naming the ones written."""
    suffix = Path(path).suffix.lower()
    if suffix in formats:
        return formats[suffix]
    names = ", ".join(dict.fromkeys(f"{ext} ({name})" for ext, (name, _) in formats.items()))
    what = f"'{suffix}'" if suffix else "no extension"
    raise InputError(f"cannot write {path}: {what} is not a format this output can take; use one of {names}")


def check_output(path: str | PathLike, overwrite: bool = False,
                 formats: Mapping[str, tuple[str, str]] | None = None) -> Path:
    """Validate an output path before any work is done; returns it as a Path.

    Args:
        formats: when given, the extension must be one of them (:data:`VECTOR_FORMATS`,
            :data:`RASTER_FORMATS`).

    Raises:
        InputError: a format not in ``formats``, the path exists and ``overwrite`` is False,
            the path is a directory, or its directory does not exist or cannot be written.
    """
    if Path(path).is_dir():
        raise InputError(f"output is a directory: {path}")
    if formats is not None:
        output_format(path, formats)
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"output already exists: {path}", param="overwrite")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory does not exist: {parent}")
    try:  # os.access lies for root and on read-only mounts: really try
        fd, probe = tempfile.mkstemp(prefix=".geoalign-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write to output directory {parent}: {exc.strerror or exc}") from None
    return path


def check_not_an_input(out: str | PathLike, *inputs: str | PathLike | None) -> None:
    """InputError when the output would replace one of the inputs (the raster, the regions, ...)."""
    out_path = Path(out)
    for item in inputs:
        if item is None or "://" in str(item) or str(item).startswith("/vsi"):
            continue
        p = Path(item)
        same = (out_path.exists() and p.exists() and os.path.samefile(out_path, p)) or \
            out_path.resolve() == p.resolve()
        if same:
            raise InputError(f"the output {out} is an input of this run", param="out")

__all__ = ["RASTER_FORMATS", "VECTOR_FORMATS", "OutputBusy", "check_not_an_input", "check_output", "exists_error",
           "lock_path", "output_format", "output_lock", "publish"]

_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS,
             errno.EACCES}
_held = threading.local()


class OutputBusy(InputError):
    """Another run holds the output's lock (``code="busy"``)."""


def lock_path(path: str | PathLike) -> Path:
    """The lock file of ``path``: ``.<name>.lock`` in the same folder."""
    path = Path(os.path.abspath(path))
    return path.with_name(f".{path.name}.lock")


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]  # Windows only (checked on Linux)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:  # a file system without locks (some network mounts): go on unlocked
        if exc.errno in (errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
            return True
        raise


def _holder(lp: Path) -> str:
    try:
        text = lp.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return ""
    return f" (process {text[0]} on {text[1]})" if len(text) >= 2 else ""


@contextlib.contextmanager
def output_lock(path: str | PathLike, *, wait: float = 0.0, what: str = "writing") -> Iterator[None]:
    """Hold the lock of output ``path`` for the block.

    Args:
        wait: seconds to wait for another run to release it; 0 refuses at once.
        what: what the other run is doing, for the message ("writing", "building").

    Raises:
        OutputBusy: another run (another process, or another thread here) holds it after ``wait``.
        InputError: the lock file cannot be created (an unwritable folder).
    """
    lp = lock_path(path)
    held: set[str] = _held.__dict__.setdefault("paths", set())
    if str(lp) in held:  # this thread holds it already (an outer step of the same run)
        yield
        return
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            raise InputError(f"output directory does not exist: {lp.parent}", param="out") from None
        except OSError as exc:
            raise InputError(f"cannot write to output directory {lp.parent}: {exc.strerror or exc}",
                             param="out") from None
        try:
            got = _try_lock(fd)
            if got:  # its last holder may have removed the file between our open and our lock
                try:
                    got_same = os.path.samestat(os.fstat(fd), os.stat(lp))
                except FileNotFoundError:
                    got_same = False
                if got_same:
                    break
                os.close(fd)
                continue
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if time.monotonic() >= deadline:
            raise OutputBusy(f"another GeoAlign run is {what} {path} now{_holder(lp)}; wait for it to finish "
                             "or choose another output", code="busy", param="out")
        time.sleep(0.05)
    held.add(str(lp))
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield
    finally:
        held.discard(str(lp))
        with contextlib.suppress(OSError):  # removed while still locked: see the loop above
            os.unlink(lp)
        os.close(fd)


def exists_error(path: str | PathLike) -> InputError:
    return InputError(f"output already exists: {path} (another run created it while this one ran; "
                      "nothing of this run was written)", param="overwrite")


def publish(tmp: str | PathLike, path: str | PathLike, overwrite: bool = False) -> None:
    """Move the finished file ``tmp`` onto ``path`` (same folder).

    Without ``overwrite`` the target is created only if it does not exist, in one step (a hard
    link, else an exclusive create of the name and a rename onto it); an existing target is an
    InputError and ``tmp`` is left for the caller to remove. With ``overwrite``: a rename over it.
    """
    tmp, path = Path(tmp), Path(path)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise exists_error(path) from None
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        try:  # no hard links here (FAT, some network shares): reserve the name, then rename onto it
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise exists_error(path) from None
        os.close(fd)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return
    os.unlink(tmp)
