"""regions.py STEPS OUT [lr]: stage 1 as region classification: mask-pooled res4+res5 features of each GT segment -> linear -> CE."""
import math
import os
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from maskformer.data.datasets import COCOPanopticDataset
from maskformer.model.config import InferenceConfig
from maskformer.model.test_resize import resize_for_test

steps, out = int(sys.argv[1]), sys.argv[2]; lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-3
d = Path(os.environ.get("DEMO_DATA", "demo-output/data"))
ds = COCOPanopticDataset(d / "images/train", d / "panoptic_train.json", d / "panoptic/train")
cfg = InferenceConfig(test_shortest_edge=128, test_max_size=512)
mean = torch.tensor((123.675, 116.28, 103.53)).view(3, 1, 1); std = torch.tensor((58.395, 57.12, 57.375)).view(3, 1, 1)
t0 = time.time()
items = []
for i in range(len(ds)):
    s = ds.load(i)
    img = resize_for_test(s["image"].float(), cfg)
    H, W = img.shape[-2:]
    ids = F.interpolate(s["label"][None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
    segs = [(sid, seg.category) for sid, seg in s["segments"].items() if not seg.iscrowd]
    items.append((((img - mean) / std), ids, segs))
print("loaded", time.time() - t0, flush=True)
held = [it for i, it in enumerate(items) if i % 10 == 9]; train = [it for i, it in enumerate(items) if i % 10 != 9]
torch.manual_seed(0); g = torch.Generator().manual_seed(0)
import os

init = os.environ.get("INIT")
body = timm.create_model("resnet18", features_only=True, out_indices=(3, 4), **({"pretrained": True, "pretrained_cfg_overlay": {"file": init}} if init else {}))
head = torch.nn.Linear(256 + 512, 6)
params = list(body.parameters()) + list(head.parameters())
opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
def region_logits(batch):
    # pad to common size
    Hm = max(x.shape[-2] for x, _, _ in batch); Wm = max(x.shape[-1] for x, _, _ in batch)
    Hm, Wm = -(-Hm // 32) * 32, -(-Wm // 32) * 32
    x = torch.stack([F.pad(im, (0, Wm - im.shape[-1], 0, Hm - im.shape[-2])) for im, _, _ in batch])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r4, r5 = body(x.contiguous(memory_format=torch.channels_last))
    f = torch.cat([r4.float(), F.interpolate(r5.float(), size=r4.shape[-2:], mode="bilinear")], 1)
    feats, labels = [], []
    for b, (im, ids, segs) in enumerate(batch):
        idp = F.pad(ids, (0, Wm - ids.shape[-1], 0, Hm - ids.shape[-2]), value=0)
        masks = torch.stack([(idp == sid).float() for sid, _ in segs])[:, None]
        m = F.interpolate(masks, size=f.shape[-2:], mode="area")[:, 0]
        pooled = torch.einsum("nhw,chw->nc", m, f[b]) / m.sum((1, 2))[:, None].clamp(min=1e-6)
        feats.append(pooled); labels += [c for _, c in segs]
    return head(torch.cat(feats)), torch.tensor(labels)
def aug(im, ids):
    k = int(torch.randint(4, (1,), generator=g)); im, ids = torch.rot90(im, k, (-2, -1)), torch.rot90(ids, k, (-2, -1))
    if torch.rand(1, generator=g) < 0.5: im, ids = im.flip(-1), ids.flip(-1)
    return im, ids
body.train()
for step in range(steps):
    pick = torch.randint(len(train), (8,), generator=g)
    batch = [(*aug(train[i][0], train[i][1]), train[i][2]) for i in pick]
    logits, labels = region_logits(batch)
    loss = F.cross_entropy(logits, labels)
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    if step % 50 == 49: print(step + 1, round(time.time() - t0), round(loss.item(), 3), flush=True)
body.eval(); right = []; th = []
with torch.no_grad():
    for j in range(0, len(held), 8):
        logits, labels = region_logits(held[j : j + 8])
        right.append(logits.argmax(1) == labels); th.append(labels < 3)
right, th = torch.cat(right), torch.cat(th)
print("held-out acc", right.float().mean().item(), "things", right[th].float().mean().item(), "seconds", round(time.time() - t0))
# save as a timm-format classifier state dict (features_only body keys match resnet18's)
sd = {k: v.contiguous() for k, v in body.state_dict().items()}
save_file(sd, out)
