"""query_probe.py RUN DATA: linear probe on the final decoder state (class head's input) of each shape's best query.
Train on shapes of 300 training images, test on the 100 validation images; compare to the class head."""
import sys
from pathlib import Path
import torch, torch.nn.functional as F
from maskformer.data.datasets import COCOPanopticDataset
from maskformer.model.test_resize import resize_for_test
from maskformer.predict import load_model

model = load_model(sys.argv[1]).eval()
d = Path(sys.argv[2]); cfg = model.config.inference
things = set(model.config.metadata.thing_classes)
# The class head's input of each forward's last prediction: the last decoder layer's query states.
head = next(m for name, m in model.named_modules() if name.endswith("class_embed"))
seen = []
head.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
def collect(split, n):
    ds = COCOPanopticDataset(d / f"images/{split}", d / f"panoptic_{split}.json", d / f"panoptic/{split}")
    X, Y, P = [], [], []
    for i in range(n):
        s = ds.load(i); img = s["image"].float()
        x = model.normalize(resize_for_test(img, cfg)); seen.clear()
        with torch.no_grad(): out = model(x[None])
        h = seen[-1][0]
        H, W = img.shape[-2:]
        masks = F.interpolate(out.masks, size=x.shape[-2:], mode="bilinear")[..., :x.shape[-2], :x.shape[-1]]
        masks = F.interpolate(masks, size=(H, W), mode="bilinear")[0] > 0
        for seg_id, seg in s["segments"].items():
            if seg.category not in things: continue
            gt = s["label"] == seg_id
            iou = (masks & gt).sum((1,2)).float() / (masks | gt).sum((1,2)).float().clamp(min=1)
            q = int(iou.argmax()); X.append(h[q]); Y.append(seg.category); P.append(int(out.logits[0, q].argmax()))
    return torch.stack(X), torch.tensor(Y), torch.tensor(P)
Xtr, Ytr, _ = collect("train", 300); Xte, Yte, Pte = collect("val", 100)
mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
lin = torch.nn.Linear(Xtr.shape[1], 3); opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-4)
for _ in range(500):
    opt.zero_grad(); F.cross_entropy(lin((Xtr-mu)/sd), Ytr).backward(); opt.step()
acc_tr = (lin((Xtr-mu)/sd).argmax(1) == Ytr).float().mean()
acc = (lin((Xte-mu)/sd).argmax(1) == Yte).float().mean()
print(f"train shapes {len(Ytr)} probe train acc {acc_tr:.3f}; val shapes {len(Yte)} probe acc {acc:.3f}; class head acc {(Pte==Yte).float().mean():.3f}")
