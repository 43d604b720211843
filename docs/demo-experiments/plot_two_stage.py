"""The two-stage demo against the one-stage one, on the same seconds: reads the output folders of
``maskformer demo`` (two-stage, the default) and ``maskformer demo --backbone-steps 0 --steps 600`` (one-stage,
the demo before issue 23) and writes docs/demo-two-stage.png and the table in docs/demo.md.

The seconds of a validation are stage 1's seconds plus stage 2's training seconds in proportion to its step
(steps take the same time to within a few per cent; validations are included in the proportion).

    python docs/demo-experiments/plot_two_stage.py TWO_STAGE_OUT ONE_STAGE_OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = ("mIoU", "PQ", "PQ_th")
TARGETS = {"mIoU": 0.70, "PQ": 0.55, "PQ_th": 0.40}


def points(out: Path) -> list[dict]:
    summary = json.loads((out / "run" / "summary.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    first = metrics.get("backbone_seconds") or 0.0
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return [{**r, "seconds": first + summary["seconds"] * r["step"] / summary["steps"]} for r in records]


def main(two: Path, one: Path, plot: Path = Path("docs/demo-two-stage.png")) -> None:
    runs = {"two stages (backbone pretrained on crops, then 400 steps)": points(two),
            "one stage (from scratch, 600 steps)": points(one)}  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes, METRICS):
        for (name, rows), style in zip(runs.items(), ("o-", "s--")):
            ax.plot([r["seconds"] for r in rows], [r[metric] for r in rows], style, label=name)
        ax.axhline(TARGETS[metric], color="grey", lw=1, ls=":", label="target")
        ax.set_title(metric.replace("PQ_th", "PQ things"))
        ax.set_xlabel("seconds of training (stage 1 included)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(plot, dpi=100)
    print("| run | step | seconds | mIoU | PQ | PQ things | PQ stuff | AP |\n|---|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        for r in rows:
            print(f"| {name.split(' (')[0]} | {r['step']} | {r['seconds']:.0f} | {r['mIoU']:.3f} | {r['PQ']:.3f} | "
                  f"{r['PQ_th']:.3f} | {r['PQ_st']:.3f} | {r['AP']:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
