"""diag.py RUN: per GT thing in val, the best-IoU query: its IoU, argmax class, prob of the true class and of no-object."""
import collections
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from maskformer.data.datasets import COCOPanopticDataset
from maskformer.model.test_resize import resize_for_test
from maskformer.predict import load_model

model = load_model(sys.argv[1]).eval()
d = Path(os.environ.get("DEMO_DATA", "demo-output/data"))
ds = COCOPanopticDataset(d / "images/val", d / "panoptic_val.json", d / "panoptic/val")
cfg = model.config.inference
things = set(model.config.metadata.thing_classes)
stats = collections.Counter(); ious = []; ptrue = []; pno = []; conf = collections.Counter()
for i in range(100):
    s = ds.load(i)
    img = s["image"].float()
    x = model.normalize(resize_for_test(img, cfg))
    with torch.no_grad():
        out = model(x[None])
    H, W = img.shape[-2:]
    masks = F.interpolate(out.masks, size=x.shape[-2:], mode="bilinear")[..., : x.shape[-2], : x.shape[-1]]
    masks = F.interpolate(masks, size=(H, W), mode="bilinear")[0] > 0
    probs = out.logits[0].softmax(-1)
    for seg_id, seg in s["segments"].items():
        gt = s["label"] == seg_id
        inter = (masks & gt).sum((1, 2)).float(); union = (masks | gt).sum((1, 2)).float()
        iou = inter / union.clamp(min=1)
        q = int(iou.argmax())
        kind = "thing" if seg.category in things else "stuff"
        cls = int(probs[q].argmax())
        stats[(kind, "best iou>0.5")] += int(iou[q] > 0.5)
        stats[(kind, "n")] += 1
        stats[(kind, "argmax right")] += int(cls == seg.category)
        stats[(kind, "argmax noobj")] += int(cls == probs.shape[1] - 1)
        if kind == "thing":
            ious.append(float(iou[q])); ptrue.append(float(probs[q, seg.category])); pno.append(float(probs[q, -1]))
            conf[(seg.category, cls)] += 1
print(dict(stats))
import statistics as st

print("thing best iou median", st.median(ious), "p(true) median", st.median(ptrue), "p(noobj) median", st.median(pno))
print("confusion (gt, pred argmax of best query):", sorted(conf.items()))
