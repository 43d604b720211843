"""The run's metrics as one CSV file, through Lightning's public logger interface."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only


class CSVLog(Logger):
    """``<run>/csv/metrics.csv``: a ``step`` column, then one column per metric in the order they first
    appear; one row per ``log_metrics`` call (the module's rows, numbered by the step they belong to). A run
    resumed at ``resume_step`` keeps the rows of that step and those before it, so that an interrupted and
    resumed run ends with the log of an uninterrupted one. Rows are appended at each ``save``; a new metric
    rewrites the file with its column."""

    def __init__(self, run_dir: str | Path, resume_step: int = 0):
        super().__init__()
        self.path = Path(run_dir) / "csv" / "metrics.csv"
        self.fields: list[str] = ["step"]
        self.rows: list[dict[str, Any]] = []
        self._written = 0  # rows already in the file
        self._fresh = True  # the file has yet to be (re)written whole
        if resume_step and self.path.is_file():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or ["step"])
                self.rows = [row for row in reader if row.get("step") and int(float(row["step"])) <= resume_step]

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run folder's config.yaml holds the run's settings."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        new = [k for k in row if k not in self.fields]
        if new:
            self.fields += new
            self._fresh = True
        self.rows.append(row)

    @rank_zero_only
    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._fresh:
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(self.rows)
            self._fresh = False
        elif len(self.rows) > self._written:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerows(self.rows[self._written :])
        self._written = len(self.rows)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()
