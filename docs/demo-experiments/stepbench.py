"""Time the demo's stage-2 training step (forward, loss, backward, AdamW) in fp32 / bf16 autocast, NCHW / channels-last."""
import os
import time
from pathlib import Path

import torch

from maskformer.demo import demo_config
from maskformer.model import MaskFormer, SetCriterion
from maskformer.training.datamodule import MaskFormerDataModule

torch.manual_seed(0)
cfg = demo_config(Path(os.environ.get("DEMO_DATA", "demo-output/data")), 10)
dm = MaskFormerDataModule(cfg); dm.setup("fit")
batch = next(iter(dm.train_dataloader()))
from maskformer.training.module import pad_target

res = {}
for prec in ("fp32", "bf16"):
    for cl in (False, True):
        torch.manual_seed(0)
        model = MaskFormer(cfg.model).train(); crit = SetCriterion.from_config(cfg.model)
        if cl: model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x, _ = model.preprocess([b["image"] for b in batch])
        if cl: x = x.contiguous(memory_format=torch.channels_last)
        targets = [pad_target(b["targets"], tuple(x.shape[-2:]), x.device) for b in batch]
        times = []
        for i in range(12):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                out = model(x)
            loss = sum(crit(out, targets).values())
            opt.zero_grad(); loss.backward(); opt.step()
            times.append(time.perf_counter() - t)
        res[(prec, cl)] = sorted(times[2:])[len(times[2:]) // 2]
        print(prec, "channels_last" if cl else "NCHW", f"{res[(prec, cl)]:.3f} s/step (median of 10)", flush=True)
