"""probe.py BACKBONE_SOURCE: mask-pooled res4/res5 features of GT things -> logistic regression (train split things -> val things)."""
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from maskformer.data.datasets import COCOPanopticDataset
from maskformer.demo import demo_config
from maskformer.model import MaskFormer
from maskformer.model.test_resize import resize_for_test
from maskformer.predict import load_model

src = sys.argv[1]
d = Path(os.environ.get("DEMO_DATA", "demo-output/data"))
if src.endswith(".safetensors"):
    cfg = demo_config(d, 10).model; cfg.backbone.weights = src; model = MaskFormer(cfg)
else:
    model = load_model(src)
model.eval()
things = set(model.config.metadata.thing_classes or [0, 1, 2])
def feats(split, n):
    ds = COCOPanopticDataset(d / f"images/{split}", d / f"panoptic_{split}.json", d / f"panoptic/{split}")
    X, Y = {2: [], 3: []}, []
    for i in range(n):
        s = ds.load(i)
        x = model.normalize(resize_for_test(s["image"].float(), model.config.inference))
        H, W = x.shape[-2:]
        with torch.no_grad():
            fs = model.backbone(x[None])
        ids = F.interpolate(s["label"][None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
        for seg_id, seg in s["segments"].items():
            if seg.category not in things: continue
            m = (ids == seg_id).float()[None, None]
            if m.sum() == 0: continue
            for lvl in (2, 3):
                f = fs[lvl]
                mm = F.interpolate(m, size=f.shape[-2:], mode="area")
                X[lvl].append(((f * mm).sum((2, 3)) / mm.sum().clamp(min=1e-6))[0])
            Y.append(seg.category)
    return {k: torch.stack(v) for k, v in X.items()}, torch.tensor(Y)
Xtr, Ytr = feats("train", 300); Xva, Yva = feats("val", 100)
for lvl in (2, 3):
    mu, sd = Xtr[lvl].mean(0), Xtr[lvl].std(0) + 1e-6
    a, b = (Xtr[lvl] - mu) / sd, (Xva[lvl] - mu) / sd
    lin = torch.nn.Linear(a.shape[1], 3)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(300):
        loss = F.cross_entropy(lin(a), Ytr); opt.zero_grad(); loss.backward(); opt.step()
    print(f"res{lvl+2} probe val acc {(lin(b).argmax(1) == Yva).float().mean():.3f}  (n={len(Yva)})")
