"""stepprof.py [prof [shapes]]: the demo's stage-2 training step in float32 and the demo's memory format: the median
of 10 steps split into forward, loss, backward and AdamW; with "prof" a torch.profiler table of 3 steps, with
"shapes" also one by input shape. FUSED=1 takes AdamW's fused kernel (as maskformer train does since f809ed0).
Data: $DEMO_DATA or demo-output/data."""
import os, sys, time
from pathlib import Path
import torch
from maskformer.demo import demo_config
from maskformer.model import MaskFormer, SetCriterion
from maskformer.training.datamodule import MaskFormerDataModule
from maskformer.training.module import pad_target
torch.manual_seed(0)
cfg = demo_config(Path(os.environ.get("DEMO_DATA", "demo-output/data")), 10)
dm = MaskFormerDataModule(cfg); dm.setup("fit")
batch = next(iter(dm.train_dataloader()))
model = MaskFormer(cfg.model).train(); crit = SetCriterion.from_config(cfg.model)
cl = model.trains_channels_last
if cl: model = model.to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=bool(os.environ.get("FUSED")))
x, _ = model.preprocess([b["image"] for b in batch])
if cl: x = x.contiguous(memory_format=torch.channels_last)
targets = [pad_target(b["targets"], tuple(x.shape[-2:]), x.device) for b in batch]
def step():
    out = model(x)
    loss = sum(crit(out, targets).values())
    opt.zero_grad(); loss.backward(); opt.step()
parts = {"fwd": [], "loss": [], "bwd": [], "opt": []}
for i in range(12):
    t0 = time.perf_counter(); out = model(x); t1 = time.perf_counter()
    loss = sum(crit(out, targets).values()); t2 = time.perf_counter()
    opt.zero_grad(); loss.backward(); t3 = time.perf_counter(); opt.step(); t4 = time.perf_counter()
    if i >= 2:
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)): parts[k].append(v)
med = {k: sorted(v)[len(v)//2] for k, v in parts.items()}
print("channels_last" if cl else "NCHW", {k: round(v, 4) for k, v in med.items()}, "total", round(sum(med.values()), 4))
if len(sys.argv) > 1:
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(3): step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=35))
if len(sys.argv) > 2:
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3): step()
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=30, max_shapes_column_width=110))
