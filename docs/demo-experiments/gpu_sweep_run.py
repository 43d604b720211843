"""One training run of the H200 sweep (see gpu-sweep.sh): the demo configuration on /tmp/data, on the GPU,
with key=value overrides; appends its metrics to $OUT/results.jsonl."""

import json
import os
import sys
import time
from pathlib import Path

from maskformer.demo import demo_config
from maskformer.model.config import apply_overrides
from maskformer.training import train
from maskformer.training.config import RunConfig

name, steps, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cfg = demo_config(Path("/tmp/data"), steps)
base = ["train.accelerator=gpu", "train.devices=1", f"train.val_every={max(1, steps // 4)}"]
cfg = RunConfig.from_dict(apply_overrides(cfg.to_dict(), base + overrides))
t = time.time()
s = train(cfg, Path("/tmp/runs") / name)
m = s["metrics"]
hist = [json.loads(line) for line in open(Path("/tmp/runs") / name / "metrics.jsonl")]
row = {
    "name": name,
    "env": {k: os.environ.get(k) for k in ("POSF", "AUXPP") if os.environ.get(k)},
    "steps": steps,
    "time": round(time.time() - t),
    "mIoU": round(m["mIoU"], 4),
    "PQ": round(m["PQ"], 4),
    "PQ_th": round(m["PQ_th"], 4),
    "AP": round(m["AP"], 4),
    "IoU": {k: round(v, 3) for k, v in m["IoU"].items()},
    "curve": [(h["step"], round(h["mIoU"], 3), round(h["PQ"], 3)) for h in hist],
    "ov": overrides,
}
with open(os.environ["OUT"] + "/results.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
print(json.dumps(row), flush=True)
