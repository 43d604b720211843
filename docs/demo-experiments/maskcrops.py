"""Stage 1 variant: crops as in demo/backbone.py, but classified from res4 + upsampled res5 pooled inside the
segment's mask in the crop (what masked attention reads), not by global pooling."""
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from maskformer.data.datasets import COCOPanopticDataset
from maskformer.demo import backbone as B

steps, out = int(sys.argv[1]), sys.argv[2]
d = Path(os.environ.get("DEMO_DATA", "demo-output/data"))
ds = COCOPanopticDataset(d / "images/train", d / "panoptic_train.json", d / "panoptic/train")
things = set(ds.metadata.thing_classes)
t0 = time.time()
# MARGIN=M: each shape's box times a random margin from stage 1's 1.15 to M (the shape with neighbours around it).
MARGIN = float(os.environ.get("MARGIN", B.THING_MARGIN))
def cut(indices, seed):
    rng = np.random.default_rng(seed); ims, ms, ls = [], [], []
    def margin():
        return B.THING_MARGIN if MARGIN == B.THING_MARGIN else float(rng.uniform(B.THING_MARGIN, MARGIN))
    for index in indices:
        s = ds.load(index); image, ids = s["image"], s["label"]
        for sid, seg in s["segments"].items():
            mask = ids == sid
            if seg.category in things:
                ys, xs = torch.nonzero(mask, as_tuple=True)
                y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
                h, w = image.shape[-2:]
                side = min(max(y1 - y0, x1 - x0) * margin(), h, w); cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
                top = round(min(max(cy - side / 2, 0), h - side)); left = round(min(max(cx - side / 2, 0), w - side)); side = round(side)
                ims.append(B._resize(image[:, top:top + side, left:left + side]))
                ms.append(B._resize(mask[None, top:top + side, left:left + side].float() * 255)[0] / 255)
                ls.append(seg.category)
            else:
                for c in B._stuff_crops(image, mask, rng):
                    ims.append(c); ms.append(torch.ones(B.CROP, B.CROP)); ls.append(seg.category)
    return torch.stack(ims), torch.stack(ms), torch.tensor(ls)
every = range(len(ds))
tr = cut([i for i in every if i % 10 != 9], 0); te = cut([i for i in every if i % 10 == 9], 1)
print("cut", round(time.time() - t0), len(tr[2]), flush=True)
torch.manual_seed(0); g = torch.Generator().manual_seed(0)
body = timm.create_model("resnet18", features_only=True, out_indices=(3, 4)).to(memory_format=torch.channels_last)
head = torch.nn.Linear(768, 6)
opt = torch.optim.AdamW(list(body.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=1e-4)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
mean = torch.tensor((123.675, 116.28, 103.53)).view(1, 3, 1, 1); std = torch.tensor((58.395, 57.12, 57.375)).view(1, 3, 1, 1)
def logits(x, m):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r4, r5 = body(((x.float() - mean) / std).contiguous(memory_format=torch.channels_last))
    f = torch.cat([r4.float(), F.interpolate(r5.float(), size=r4.shape[-2:], mode="bilinear")], 1)
    mm = F.interpolate(m[:, None], size=f.shape[-2:], mode="area")
    return head((f * mm).sum((2, 3)) / mm.sum((2, 3)).clamp(min=1e-6))
for step in range(steps):
    pick = torch.randint(len(tr[2]), (64,), generator=g)
    x, m = tr[0][pick], tr[1][pick]
    k = int(torch.randint(4, (1,), generator=g)); x, m = torch.rot90(x, k, (-2, -1)), torch.rot90(m, k, (-2, -1))
    loss = F.cross_entropy(logits(x, m), tr[2][pick]); opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    if step % 100 == 99: print(step + 1, round(time.time() - t0), round(loss.item(), 3), flush=True)
body.eval()
with torch.no_grad():
    pred = torch.cat([logits(x, m).argmax(1) for x, m in zip(te[0].split(256), te[1].split(256))])
right = pred == te[2]; th = te[2] < 3
print("held-out acc", right.float().mean().item(), "things", right[th].float().mean().item(), "s", round(time.time() - t0))
save_file({k: v.contiguous() for k, v in body.state_dict().items()}, out)
