"""Fine-tuning as an engine job, and the user's own models in the model list.

``finetune`` runs ``geoalign finetune`` in a child process of the engine (its own interpreter,
so a training run never holds the engine's loaded models or memory once it ends, and Cancel
can stop it at any point by ending the process group). While it runs, the job sends progress
events: the stage ("preparing chips", "training", "evaluating and calibrating"), and during
training ``done``/``total`` steps with the step's ``loss`` (read from the run's ``log.csv``).
Its output (the CLI's lines) goes to a log file beside the model folder. The result names the
model file, its report and the held-out before/after figures.

``local_models`` lists the models in the user's model folders (one folder per fine-tuned
model, as the plugin writes them), for ``list_models``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Context

POLL_S = 0.5
#: the parameters of a finetune request (protocol: see PARAMS["finetune"] in .protocol)
FINETUNE_PARAMS = ("rasters", "labels", "class_field", "model", "out", "name", "steps", "batch_size", "device",
                   "val_fraction", "bounds", "layer", "overwrite", "log", "threads")


def _argv(params: dict) -> list[str]:
    argv = [sys.executable, "-m", "geoalign_core.cli", "finetune", *[str(r) for r in params["rasters"]],
            *[str(v) for v in params["labels"]], "--class-field", str(params["class_field"]),
            "--out", str(params["out"]), "--quiet"]
    if params.get("model"):
        argv += ["--from", str(params["model"])]
    for key, opt in (("name", "--name"), ("steps", "--steps"), ("batch_size", "--batch-size"),
                     ("device", "--device"), ("val_fraction", "--val-fraction"), ("layer", "--layer"),
                     ("threads", "--threads")):
        if params.get(key) is not None:
            argv += [opt, str(params[key])]
    if params.get("bounds"):
        argv += ["--bounds", ",".join(str(float(v)) for v in params["bounds"])]
    if params.get("overwrite"):
        argv.append("--overwrite")
    return argv


def _check(params: dict) -> None:
    from ..errors import InputError

    for key in ("rasters", "labels"):
        files = params.get(key)
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise InputError(f"finetune needs {key}: a list of files", param=key)
        for f in files:
            if not ("://" in f or f.startswith("/vsi") or Path(f).exists()):
                raise InputError(f"file not found: {f}", param=key)
    steps = params.get("steps")
    if steps is not None and int(steps) < 1:
        raise InputError(f"steps must be at least 1; got {steps}", param="steps")


def _last_row(path: Path) -> dict | None:
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if (r.get("step") or "").isdigit()]
    except OSError:
        return None
    return rows[-1] if rows else None


def _total_steps(out: Path) -> int:
    try:
        import yaml

        return int((yaml.safe_load((out / "train.yaml").read_text()) or {}).get("max_steps") or 0)
    except (OSError, ValueError, TypeError, AttributeError, ImportError):
        return 0


def _stop(proc: subprocess.Popen) -> None:
    """End the fine-tuning process and its children (it runs in its own process group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        if os.name == "nt":
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            if os.name == "nt":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _error_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    err = next((ln for ln in reversed(lines) if ln.startswith("error:")), None)
    if err:
        return err[len("error:"):].strip()
    return next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")


def finetune(ctx: Context, params: dict) -> dict:
    """Run ``geoalign finetune`` with progress (stage, step / total, loss), Cancel and a log file."""
    from ..errors import Cancelled, InputError

    _check(params)
    out = Path(params["out"])
    log = Path(params.get("log") or f"{out}.finetune.log")
    created = not out.exists()
    log.parent.mkdir(parents=True, exist_ok=True)
    ctx.stage("preparing chips")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as fh:
        fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(_argv(params))}\n".encode())
        fh.flush()
        kwargs: dict[str, Any] = {"start_new_session": True} if os.name != "nt" else {}
        proc = subprocess.Popen(_argv(params), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, **kwargs)
    stage, last_step = "preparing chips", -1
    try:
        while proc.poll() is None:
            if ctx.cancelled():
                _stop(proc)
                if created:
                    shutil.rmtree(out, ignore_errors=True)
                raise Cancelled("cancelled")
            time.sleep(POLL_S)
            total = _total_steps(out)
            row = _last_row(out / "run" / "log.csv")
            if row is not None and int(row["step"]) != last_step:  # every logged step, the last one too
                if stage != "training":
                    stage = "training"
                    ctx.stage(stage)
                last_step = int(row["step"])
                loss = float(row["loss"]) if row.get("loss") not in (None, "") else None
                # the loss is in the stage's words too: every client shows it without knowing the field
                words = f"training, step {last_step} of {total}" + (f", loss {loss:.3f}" if loss is not None else "")
                ctx.stage_name = words
                ctx.engine.send({"id": ctx.job.id, "event": "progress", "stage": words, "done": last_step,
                                 "total": total, "step": last_step, "loss": loss})
            trained = row is not None and total and int(row["step"]) >= total
            now = ("evaluating and calibrating" if trained or any(out.glob("*.safetensors"))
                   else "training" if total else "preparing chips")
            if now != stage and not (now == "training" and stage.startswith("training")):
                stage = now
                ctx.stage(stage)
    except BaseException:
        _stop(proc)
        raise
    if proc.returncode != 0:
        why = _error_line(log) or f"exit code {proc.returncode}"
        if proc.returncode == 2:
            raise InputError(why)
        raise RuntimeError(f"geoalign finetune failed ({why}); its log: {log}")
    report = json.loads((out / "report.json").read_text())
    model = Path(report["model"])
    return {"path": str(model), "model": str(model), "name": model.stem, "folder": str(out),
            "report": str(out / "report.md"), "log": str(log), "steps": report.get("steps"),
            "before": report.get("before"), "after": report.get("after"), "classes": report.get("classes"),
            "card": report.get("card"), "seconds": report.get("seconds")}


def local_models(folders: list[str]) -> list[dict]:
    """The models in ``folders`` (each ``FOLDER/<name>/<name>.safetensors`` or ``FOLDER/<name>.safetensors``),
    newest first, as ``list_models`` entries; ``source`` is the file the engine loads."""
    from ..card import card_line, load_card

    found: list[Path] = []
    for folder in folders:
        base = Path(folder)
        if not base.is_dir():
            continue
        found += list(base.glob("*.safetensors"))
        found += [p for p in base.glob("*/*.safetensors") if p.stem == p.parent.name]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    out = []
    for path in found:
        card = load_card(path)
        out.append({"name": path.stem, "source": str(path), "arch": "", "available": True,
                    "state": "your fine-tuned model", "description": f"fine-tuned: {path}", "path": str(path),
                    "domain": card_line(card, path.stem), "calibrated": bool(card is not None and card.calibrated),
                    "local": True})
    return out


__all__ = ["FINETUNE_PARAMS", "finetune", "local_models"]
