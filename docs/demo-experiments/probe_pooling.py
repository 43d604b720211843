"""probe_pooling.py BACKBONE DATA: mean / max (inside mask dilated by 1 cell) / 3x3 box grid pooling probes, res3-res5."""
import sys
from pathlib import Path
import torch, torch.nn.functional as F
from torchvision.ops import roi_align
from maskformer.data.datasets import COCOPanopticDataset
from maskformer.demo import demo_config
from maskformer.model import MaskFormer
from maskformer.model.test_resize import resize_for_test
from maskformer.predict import load_model
src, d = sys.argv[1], Path(sys.argv[2])
if src.endswith(".safetensors"):
    cfg = demo_config(d, 10).model; cfg.backbone.weights = src; model = MaskFormer(cfg)
else:
    model = load_model(src)
model.eval(); things = {0, 1, 2}
LV = (1, 2, 3)
def feats(split, n):
    ds = COCOPanopticDataset(d / f"images/{split}", d / f"panoptic_{split}.json", d / f"panoptic/{split}")
    X = {(l, k): [] for l in LV for k in ("mean", "max", "grid")}; Y = []
    for i in range(n):
        s = ds.load(i)
        x = model.normalize(resize_for_test(s["image"].float(), model.config.inference))
        H, W = x.shape[-2:]
        with torch.no_grad(): fs = model.backbone(x[None])
        ids = F.interpolate(s["label"][None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
        for seg_id, seg in s["segments"].items():
            if seg.category not in things: continue
            m = (ids == seg_id).float()[None, None]
            if m.sum() == 0: continue
            ys, xs = torch.nonzero(m[0, 0], as_tuple=True)
            box = torch.tensor([[0, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]).float()
            for l in LV:
                f = fs[l]; stride = H / f.shape[-2]
                mm = F.interpolate(m, size=f.shape[-2:], mode="area")
                X[(l, "mean")].append(((f * mm).sum((2, 3)) / mm.sum().clamp(min=1e-6))[0])
                md = F.max_pool2d((mm > 0).float(), 3, 1, 1) > 0
                X[(l, "max")].append(f[0].masked_fill(~md[0], -1e4).amax((1, 2)))
                X[(l, "grid")].append(roi_align(f, box, 3, spatial_scale=1 / stride, aligned=True).flatten())
            Y.append(seg.category)
    return {k: torch.stack(v) for k, v in X.items()}, torch.tensor(Y)
Xtr, Ytr = feats("train", 400); Xva, Yva = feats("val", 100)
for key in Xtr:
    mu, sd = Xtr[key].mean(0), Xtr[key].std(0) + 1e-6
    a, b = (Xtr[key] - mu) / sd, (Xva[key] - mu) / sd
    lin = torch.nn.Linear(a.shape[1], 3); opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(300):
        loss = F.cross_entropy(lin(a), Ytr); opt.zero_grad(); loss.backward(); opt.step()
    print(f"res{key[0]+2} {key[1]:5s} train {(lin(a).argmax(1) == Ytr).float().mean():.3f} val {(lin(b).argmax(1) == Yva).float().mean():.3f}")
