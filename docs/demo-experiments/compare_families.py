"""Both families on the demo's data, same seed and budget: validation mIoU, PQ and PQ things against steps
and against seconds of training (validations included), drawn to docs/demo-families.png.

    .venv/bin/python docs/demo-experiments/compare_families.py --out runs/families [--val-every-share 8]

Each family trains its demo configuration (maskformer.demo.demo_config) for its demo steps
(each family's ``demo.cpu_steps``), validating on all 100 validation images more often than the demo does.
``--plot-only`` redraws from the run folders.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from lightning.pytorch.callbacks import Callback

from maskformer.data.synth import write_dataset
from maskformer.demo import demo_config
from maskformer.model import FAMILIES, family
from maskformer.training import train

METRICS = ("mIoU", "PQ", "PQ_th")


class ValidationClock(Callback):
    """Seconds since training started at the end of each validation, written to ``path`` as {step: s}
    (a run's own files hold no times: an interrupted and resumed run must end with the same files)."""

    def __init__(self, path: Path):
        self.path, self.seconds, self.start = path, {}, 0.0

    def on_train_start(self, trainer, module) -> None:
        self.start = time.monotonic()

    def on_validation_end(self, trainer, module) -> None:
        self.seconds[trainer.global_step] = round(time.monotonic() - self.start, 1)
        self.path.write_text(json.dumps(self.seconds) + "\n")


def run(out: Path, validations: int, families: list[str]) -> None:
    data = write_dataset(out / "data", 800, 100, seed=0)
    for name in families:
        steps = family(name).demo.cpu_steps
        config = demo_config(data, steps, name)
        config.train.val_every = max(1, steps // validations)
        (out / name).mkdir(parents=True, exist_ok=True)
        train(config, out / name, callbacks=[ValidationClock(out / name / "seconds.json")])


def plot(out: Path, path: Path) -> None:
    fig, axes = plt.subplots(2, len(METRICS), figsize=(4 * len(METRICS), 7), squeeze=False)
    for name in [f.name for f in FAMILIES]:
        records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        seconds = json.loads((out / name / "seconds.json").read_text())
        for record in records:
            record["seconds"] = seconds[str(record["step"])]
        for col, metric in enumerate(METRICS):
            for row, x in enumerate(("step", "seconds")):
                ax = axes[row][col]
                ax.plot([r[x] for r in records], [r[metric] for r in records], marker="o", label=family(name).title)
                ax.set_xlabel("training step" if x == "step" else "seconds of training (validations included)")
                ax.set_title(f"validation {metric.replace('_th', ' things')}")
                ax.set_ylim(0, 1)
                ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle("The demo's two families on its data (2 CPU cores, seed 0, bf16-mixed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/families"))
    parser.add_argument("--validations", type=int, default=8, help="validations per run")
    parser.add_argument("--plot", type=Path, default=Path(__file__).parents[1] / "demo-families.png")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument(
        "--families",
        nargs="+",
        choices=[f.name for f in FAMILIES],
        default=[f.name for f in FAMILIES],
        help="to (re)train",
    )
    args = parser.parse_args()
    if not args.plot_only:
        run(args.out, args.validations, args.families)
    plot(args.out, args.plot)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
