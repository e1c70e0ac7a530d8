"""The run log of training: ``OUT/log.csv`` (and TensorBoard when installed)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from geoalign_core.losses import LOGGED_TERMS

__all__ = ["CSV_FIELDS", "LOG_FILE", "RunLog"]

log = logging.getLogger("geoalign.train")
LOG_FILE = "log.csv"
CSV_FIELDS = ["step", "epoch", "lr", "loss", *(f"loss_{n}" for n in LOGGED_TERMS), "logit_scale",
              "images_per_s", "elapsed_s"]


class RunLog:
    """CSV (+ TensorBoard when installed) on rank 0."""

    def __init__(self, out_dir: Path, start_step: int, tensorboard: bool):
        self.path = out_dir / LOG_FILE
        rows: list[dict] = []
        if start_step > 0 and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            w.writerows(rows)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1)
            except Exception:  # tensorboard not installed
                self.tb = None

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=CSV_FIELDS).writerow({k: row.get(k, "") for k in CSV_FIELDS})
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------- result
