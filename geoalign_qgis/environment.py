"""Where the GeoAlign engine's Python lives, and the one-click set-up of a private one.

Standard library only (no Qt): the dock and the settings dialog call it with QGIS's
settings and profile folder; the tests call it directly.

The engine's Python is, in this order:

1. ``$GEOALIGN_ENGINE_PYTHON`` (tests, administrators);
2. the path set in the plugin's settings dialog;
3. the environment the plugin set up itself: ``<QGIS profile>/geoalign/engine-env``.

The set-up (:class:`Installer`) never touches QGIS's own Python: it creates a virtual
environment with ``python -m venv`` from the interpreter QGIS ships, installs PyTorch (the
CUDA build when ``nvidia-smi`` finds a GPU, the CPU build otherwise) and the GeoAlign wheel
bundled in the plugin zip, then verifies the result by starting the engine and importing the
model stack in it. Only then does it write the marker file that makes the environment count:
a set-up that failed or was cancelled is removed and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENV_VAR = "GEOALIGN_ENGINE_PYTHON"
PACKAGE_VAR = "GEOALIGN_PACKAGE"  # pip requirement to install instead of the bundled wheel
TORCH_INDEX_VAR = "GEOALIGN_TORCH_INDEX"  # a wheel index URL for torch, or "pypi"
PRIVATE_ENV = "engine-env"
MARKER = "geoalign-engine-env.json"
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")  # a matched pair (pyproject.toml allows 2.14.x / 0.29.x)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX_WINDOWS = "https://download.pytorch.org/whl/cu128"
PLUGIN_DIR = Path(__file__).resolve().parent
WHEELS_DIR = PLUGIN_DIR / "wheels"

SOURCES = ("environment variable", "settings", "private environment")
#: PyPI's torch for Linux is the CUDA build: what it takes on disk (with its NVIDIA libraries)
PYPI_LINUX_TORCH_SIZE = "about 6 GB"
#: pip output that means a package site could not be reached (not that a package is missing)
NETWORK_SIGNS = ("Failed to establish a new connection", "NewConnectionError", "Connection refused",
                 "Name or service not known", "Temporary failure in name resolution", "Max retries exceeded",
                 "ConnectTimeoutError", "Could not fetch URL", "ProxyError", "SSLError", "Network is unreachable",
                 "No route to host", "getaddrinfo failed")


def site_unreachable(url: str, timeout: float = 5.0) -> str | None:
    """Why ``url`` (a package index) cannot be reached, or None when it answers (any HTTP status)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - the user's own index URL
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"


# ---------------------------------------------------------------------------- locating
def venv_python(env_dir: str | os.PathLike) -> Path:
    """The interpreter of a virtual environment folder (``bin/python`` or ``Scripts\\python.exe``)."""
    env_dir = Path(env_dir)
    if os.name == "nt":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


def private_env_dir(profile_dir: str | os.PathLike) -> Path:
    """The plugin's own environment inside a QGIS profile folder."""
    return Path(profile_dir) / "geoalign" / PRIVATE_ENV


def is_complete_env(env_dir: str | os.PathLike) -> bool:
    """A set-up that finished and was verified (its marker file exists)."""
    env_dir = Path(env_dir)
    return (env_dir / MARKER).is_file() and venv_python(env_dir).is_file()


@dataclass
class EngineLocation:
    """The engine Python to use and where that choice came from.

    ``python`` is None when there is none yet (the dock then offers the set-up); ``problem``
    says what is wrong with a configured path that does not exist.
    """

    python: str | None
    source: str | None
    problem: str | None = None

    @property
    def found(self) -> bool:
        return self.python is not None


def locate_engine(settings_path: str | None, profile_dir: str | os.PathLike | None,
                  environ: dict[str, str] | None = None) -> EngineLocation:
    """The engine Python: ``$GEOALIGN_ENGINE_PYTHON``, else the settings' path, else the private env."""
    environ = os.environ if environ is None else environ
    env_value = (environ.get(ENV_VAR) or "").strip()
    if env_value:
        if Path(env_value).is_file():
            return EngineLocation(env_value, SOURCES[0])
        return EngineLocation(None, SOURCES[0], f"{ENV_VAR} names a Python that does not exist: {env_value}")
    settings_path = (settings_path or "").strip()
    if settings_path:
        if Path(settings_path).is_file():
            return EngineLocation(settings_path, SOURCES[1])
        return EngineLocation(None, SOURCES[1], f"the engine Python set in the GeoAlign settings does not exist: "
                                                f"{settings_path}")
    if profile_dir is not None:
        env_dir = private_env_dir(profile_dir)
        if is_complete_env(env_dir):
            return EngineLocation(str(venv_python(env_dir)), SOURCES[2])
    return EngineLocation(None, None)


def base_python() -> str:
    """The Python interpreter QGIS runs, to create environments with.

    ``sys.executable`` is not it inside QGIS: it is ``qgis-bin.exe`` on Windows and, on Linux,
    whatever ``python3`` comes first on PATH (a pyenv shim, a conda Python). The interpreter
    QGIS embeds lives under ``sys.base_exec_prefix``.
    """
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.base_exec_prefix)
    if os.name == "nt":
        candidates = [prefix / "python.exe", prefix / "python3.exe"]
    else:
        candidates = [prefix / "bin" / f"python{ver}", prefix / "bin" / "python3"]
    for c in candidates:
        if c.is_file():
            return str(c)
    return sys.executable


def detect_gpu(timeout: float = 10.0) -> str | None:
    """The first NVIDIA GPU ``nvidia-smi -L`` lists, or None (no driver, no GPU)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip().startswith("GPU")]
    return lines[0] if out.returncode == 0 and lines else None


def bundled_package() -> str | None:
    """What to pip-install as GeoAlign: ``$GEOALIGN_PACKAGE``, the wheel in the plugin zip, or a
    source checkout the plugin runs from; None when there is none."""
    env = (os.environ.get(PACKAGE_VAR) or "").strip()
    if env:
        return env
    wheels = sorted(WHEELS_DIR.glob("geoalign-*.whl")) if WHEELS_DIR.is_dir() else []
    if wheels:
        return str(wheels[-1])
    checkout = PLUGIN_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "geoalign_core").is_dir():
        return str(checkout)
    return None


# ---------------------------------------------------------------------------- plan
@dataclass
class Step:
    """One command of a set-up; ``weight`` is its share of the progress bar."""

    title: str
    argv: list[str]
    weight: float = 1.0


@dataclass
class InstallPlan:
    """What a set-up installs, and where.

    Attributes:
        target: the environment folder (removed and recreated).
        base_python: the interpreter that creates it (QGIS's, see :func:`base_python`).
        torch: torch / torchvision requirements (empty: not installed separately).
        torch_index: the wheel index for them (None: PyPI).
        packages: GeoAlign itself (the bundled wheel) and anything else, installed after torch.
        pip_args: extra pip options for every install (e.g. ``--no-index --find-links D``).
        check_modules: what the verification imports in the engine (None: the whole model stack).
        build: a short description for the user ("CPU", "CUDA (NVIDIA ...)").
    """

    target: Path
    base_python: str
    torch: list[str] = field(default_factory=list)
    torch_index: str | None = None
    packages: list[str] = field(default_factory=list)
    pip_args: list[str] = field(default_factory=list)
    check_modules: list[str] | None = None
    build: str = ""

    @property
    def python(self) -> Path:
        return venv_python(self.target)

    def steps(self) -> list[Step]:
        py = str(self.python)
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
        out = [Step("creating the environment", [self.base_python, "-m", "venv", str(self.target)], 1.0)]
        if self.torch:
            index = ["--index-url", self.torch_index] if self.torch_index else []
            out.append(Step(f"installing PyTorch ({self.build or 'default build'})",
                            pip + index + self.pip_args + self.torch, 6.0))
        if self.packages:
            out.append(Step("installing GeoAlign", pip + self.pip_args + self.packages, 3.0))
        return out

    def describe(self) -> str:
        """What the set-up will do, for the dock."""
        what = ", ".join(self.torch + [Path(p).name if os.path.exists(p) else p for p in self.packages])
        index = f" from {self.torch_index}" if self.torch_index else ""
        big = ""
        if self.build.startswith("PyPI's build"):
            big = (f" PyPI's PyTorch for Linux is the CUDA build: {PYPI_LINUX_TORCH_SIZE} on disk, even though "
                   "this computer has no NVIDIA GPU.")
        return (f"Creates {self.target} and installs {what} ({self.build or 'default build'}{index}).{big} "
                "QGIS's own Python is not changed.")


def default_plan(target: str | os.PathLike, package: str | None = None, gpu: str | None | bool = None,
                 base: str | None = None) -> InstallPlan:
    """The real set-up: pinned torch + torchvision (CUDA build with a GPU, CPU build without) and GeoAlign.

    Args:
        target: the environment folder.
        package: GeoAlign's pip requirement (default: :func:`bundled_package`).
        gpu: the GPU found (``detect_gpu()`` when None; False: plan for the CPU).
        base: the interpreter that creates the environment (default: :func:`base_python`).
    """
    package = package or bundled_package()
    if package is None:
        raise InstallError("this plugin build carries no GeoAlign package to install (build the zip with "
                           "`make plugin`), or set the engine Python in the GeoAlign settings")
    if gpu is None:
        gpu = detect_gpu()
    system = platform.system()
    if gpu:
        build = f"CUDA build, for {gpu}"
        index = TORCH_CUDA_INDEX_WINDOWS if system == "Windows" else None  # Linux: PyPI's wheels are CUDA builds
    elif system == "Linux":
        build, index = "CPU build", TORCH_CPU_INDEX  # PyPI's Linux wheels are CUDA builds (several GB)
    else:
        build, index = "CPU build", None  # PyPI's Windows and macOS wheels are CPU builds
    override = (os.environ.get(TORCH_INDEX_VAR) or "").strip()
    if override:  # a mirror, or PyPI where download.pytorch.org cannot be reached
        index = None if override.lower() == "pypi" else override
        pypi_linux = index is None and system == "Linux"
        build = "PyPI's build (CUDA, runs on CPU too)" if pypi_linux else f"the build {override} serves"
    return InstallPlan(Path(target), base or base_python(), list(TORCH_PINS), index, [package], build=build)


# ---------------------------------------------------------------------------- running
class InstallError(RuntimeError):
    """The set-up failed; the message is one line, the log has the details.

    ``unreachable``: the PyTorch wheel site (the plan's torch index) could not be reached; the set-up
    can be run again with PyPI's PyTorch instead (:func:`pypi_plan`)."""

    def __init__(self, message: str, unreachable: str | None = None) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def network_problem(lines: list[str]) -> str | None:
    """The first line of pip's output that says a site could not be reached, or None."""
    return next((ln.strip() for ln in lines if any(sign in ln for sign in NETWORK_SIGNS)), None)


def pypi_plan(plan: InstallPlan) -> InstallPlan:
    """``plan`` with PyTorch from PyPI (the fallback when its own wheel site cannot be reached)."""
    linux = platform.system() == "Linux"
    build = "PyPI's build (CUDA, runs on CPU too)" if linux else "PyPI's build"
    return InstallPlan(plan.target, plan.base_python, list(plan.torch), None, list(plan.packages),
                       list(plan.pip_args), plan.check_modules, build)


def pypi_offer(plan: InstallPlan) -> str:  # noqa: ARG001 (the plan it replaces: same packages)
    """What the fallback button says it does (short: the dock is narrow)."""
    size = f" ({PYPI_LINUX_TORCH_SIZE})" if platform.system() == "Linux" else ""
    return f"Use PyTorch from PyPI{size}"


class InstallCancelled(Exception):
    """The set-up was cancelled; what it had created was removed."""


class Installer:
    """Runs an :class:`InstallPlan`; every line of output goes to ``log_path`` and ``on_line``.

    Args:
        plan: what to install.
        log_path: the set-up log (appended).
        on_line: called with each output line (for a log view).
        on_progress: called with ``(step title, fraction done 0..1)``.
        cancelled: polled while a command runs; when true the command is killed and the
            environment removed (:class:`InstallCancelled`).
    """

    def __init__(self, plan: InstallPlan, log_path: str | os.PathLike,
                 on_line: Callable[[str], None] | None = None,
                 on_progress: Callable[[str, float], None] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> None:
        self.plan = plan
        self.log_path = Path(log_path)
        self.on_line = on_line
        self.on_progress = on_progress
        self.cancelled = cancelled or (lambda: False)

    def _emit(self, line: str) -> None:
        line = line.rstrip("\n")
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if self.on_line is not None:
            self.on_line(line)

    def _progress(self, title: str, fraction: float) -> None:
        if self.on_progress is not None:
            self.on_progress(title, max(0.0, min(1.0, fraction)))

    def run(self) -> Path:
        """Set up the environment; returns its Python. Raises InstallError / InstallCancelled."""
        plan = self.plan
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._emit(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} GeoAlign set-up: {plan.describe()}")
        if plan.target.exists():
            self._emit(f"removing the previous environment {plan.target}")
            self._remove_target()
        steps = plan.steps()
        total = sum(s.weight for s in steps) + 1.0  # + verification
        done = 0.0
        try:
            for step in steps:
                self._progress(step.title, done / total)
                self._run_step(step)
                done += step.weight
            self._progress("verifying: starting the engine", done / total)
            report = self._verify()
            marker = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "plan": asdict(plan) | {"target": str(plan.target)}, "check": report}
            (plan.target / MARKER).write_text(json.dumps(marker, indent=2, default=str), encoding="utf-8")
        except BaseException:
            self._remove_target()
            raise
        self._progress("done", 1.0)
        self._emit(f"--- set-up finished: {plan.python}")
        return plan.python

    def _remove_target(self) -> None:
        target = self.plan.target
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        if target.exists():  # Windows: files of a process that has not quite ended yet
            time.sleep(1.0)
            shutil.rmtree(target, ignore_errors=True)

    def _run_step(self, step: Step) -> None:
        if self.cancelled():
            raise InstallCancelled("cancelled")
        self._emit(f"$ {' '.join(step.argv)}")
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True
        env = dict(os.environ)
        for key in ("PYTHONHOME", "PYTHONPATH", "PIP_USER", "PIP_REQUIRE_VIRTUALENV"):
            env.pop(key, None)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, **kwargs)
        except OSError as exc:
            raise InstallError(f"{step.title} failed: cannot run {step.argv[0]} ({exc})") from None
        last: list[str] = []
        network: list[str] = []  # the first line saying a site could not be reached (pip says it early)

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    last.append(line)
                    del last[:-20]
                    if not network and network_problem([line]):
                        network.append(line.strip())
                    self._emit(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            while proc.poll() is None:
                if self.cancelled():
                    self._kill(proc)
                    reader.join(5)
                    self._emit("--- cancelled")
                    raise InstallCancelled("cancelled")
                time.sleep(0.1)
            reader.join(10)
        finally:
            with contextlib.suppress(OSError, ValueError):
                proc.stdout.close()
        if proc.returncode != 0:
            why = next((ln for ln in reversed(last) if "error" in ln.lower()), last[-1] if last else "")
            if step.argv[1:3] == ["-m", "venv"] and ("ensurepip" in " ".join(last) or "venv" in why):
                why += " (on Debian/Ubuntu: apt install python3-venv)"
            index = self.plan.torch_index
            if not network and index and "--index-url" in step.argv:
                # pip does not always say that an index was down (a package found elsewhere, e.g. in
                # --find-links, then fails on a dependency): ask the site itself
                down = site_unreachable(index)
                if down:
                    network = [down]
            if network and index and "--index-url" in step.argv:
                # pip's last words ("No matching distribution found for ...") hide the cause: the site was down
                host = index.split("//", 1)[-1].split("/", 1)[0]
                raise InstallError(f"{step.title} failed: the PyTorch wheel site {host} could not be reached "
                                   f"({network[0][:160]}). Try again later, or set up with PyTorch from PyPI",
                                   unreachable=host)
            if network:
                raise InstallError(f"{step.title} failed: a package site could not be reached ({network[0][:160]}); "
                                   "check the internet connection or proxy")
            raise InstallError(f"{step.title} failed (exit code {proc.returncode}): {why.strip()}")

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(OSError):
            if os.name == "nt":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def _verify(self) -> dict:
        """Start the engine from the new environment and import the model stack in it."""
        from .engine import EngineClient, EngineError

        if self.cancelled():
            raise InstallCancelled("cancelled")
        client = EngineClient(self.plan.python, self.log_path)
        try:
            hello = client.start()
            self._emit(f"engine started: {json.dumps(hello)}")
            report = client.request("check", {"modules": self.plan.check_modules} if self.plan.check_modules else {},
                                    cancelled=self.cancelled, timeout=600)
        except EngineError as exc:
            raise InstallError(f"the new environment cannot run the GeoAlign engine: {exc}") from None
        except Exception as exc:
            if type(exc).__name__ == "EngineCancelled":
                raise InstallCancelled("cancelled") from None
            raise
        finally:
            client.stop()
        self._emit(f"check: {json.dumps(report)}")
        if not report.get("ok"):
            missing = "; ".join(f"{m['module']} ({m['error']})" for m in report.get("missing", []))
            raise InstallError(f"the new environment cannot import: {missing}")
        return report


__all__ = [
    "network_problem",
    "pypi_offer",
    "pypi_plan",
    "ENV_VAR",
    "EngineLocation",
    "InstallCancelled",
    "InstallError",
    "InstallPlan",
    "Installer",
    "Step",
    "base_python",
    "bundled_package",
    "default_plan",
    "detect_gpu",
    "is_complete_env",
    "locate_engine",
    "private_env_dir",
    "venv_python",
]
