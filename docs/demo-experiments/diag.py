"""diag.py RUN [DATA]: for each shape of the validation images, the query whose mask overlaps it best: its IoU, its
argmax class, its probability of the true class; then, per query index, the true classes of the shapes it covers
best and the classes it predicted for them (a class that depends on the index and not on the shape: slot bias).
DATA defaults to $DEMO_DATA or demo-output/data."""
import collections, os, sys, statistics as st
from pathlib import Path
import torch, torch.nn.functional as F
from maskformer.data.datasets import COCOPanopticDataset
from maskformer.model.test_resize import resize_for_test
from maskformer.predict import load_model

model = load_model(sys.argv[1]).eval()
d = Path(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("DEMO_DATA", "demo-output/data"))
ds = COCOPanopticDataset(d / "images/val", d / "panoptic_val.json", d / "panoptic/val")
cfg = model.config.inference
things = set(model.config.metadata.thing_classes)
stats = collections.Counter(); ious=[]; ptrue=[]; conf=collections.Counter()
slot = collections.defaultdict(collections.Counter)  # query index -> gt class of shapes it best-covers
slotpred = collections.defaultdict(collections.Counter)
for i in range(100):
    s = ds.load(i); img = s["image"].float()
    x = model.normalize(resize_for_test(img, cfg))
    with torch.no_grad(): out = model(x[None])
    H, W = img.shape[-2:]
    masks = F.interpolate(out.masks, size=x.shape[-2:], mode="bilinear")[..., :x.shape[-2], :x.shape[-1]]
    masks = F.interpolate(masks, size=(H, W), mode="bilinear")[0] > 0
    probs = out.logits[0].softmax(-1)
    for seg_id, seg in s["segments"].items():
        gt = s["label"] == seg_id
        inter = (masks & gt).sum((1,2)).float(); union = (masks | gt).sum((1,2)).float()
        iou = inter / union.clamp(min=1); q = int(iou.argmax())
        if seg.category not in things: continue
        cls = int(probs[q].argmax())
        stats["n"] += 1; stats["iou>0.5"] += int(iou[q] > .5); stats["right"] += int(cls == seg.category)
        stats["noobj"] += int(cls == probs.shape[1]-1)
        stats["right&iou"] += int(cls == seg.category and iou[q] > .5)
        ious.append(float(iou[q])); ptrue.append(float(probs[q, seg.category]))
        conf[(seg.category, cls)] += 1
        slot[q][seg.category] += 1; slotpred[q][cls] += 1
print(dict(stats))
print("median best iou", round(st.median(ious),3), "median p(true)", round(st.median(ptrue),3))
print("confusion", sorted(conf.items()))
for q in sorted(slot): print("query", q, "gt", dict(slot[q]), "pred", dict(slotpred[q]))
modal = sum(max(c.values()) for c in slotpred.values())
print(f"{modal} of {stats['n']} shapes get their best query's most frequent class ({modal / stats['n']:.3f})")
