"""dense_head.py BACKBONE DATA STEPS: frozen backbone, small conv head over res3+res4+res5 (stride 8), per-pixel CE on
training scenes (random 128 crops of the test-resized images); per-shape majority-vote accuracy on val."""
import sys, time, random
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
from maskformer.data.datasets import COCOPanopticDataset
from maskformer.demo import demo_config
from maskformer.model import MaskFormer
from maskformer.model.test_resize import resize_for_test
src, d, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
train_bb = len(sys.argv) > 4
cfg = demo_config(d, 10).model; cfg.backbone.weights = src; model = MaskFormer(cfg)
bb = model.backbone; bb.train(train_bb)
def load(split, n):
    ds = COCOPanopticDataset(d / f"images/{split}", d / f"panoptic_{split}.json", d / f"panoptic/{split}")
    out = []
    for i in range(n):
        s = ds.load(i)
        x = model.normalize(resize_for_test(s["image"].float(), cfg.inference))
        H, W = x.shape[-2:]
        sem = torch.full(s["label"].shape, 6, dtype=torch.long)
        for sid, seg in s["segments"].items(): sem[s["label"] == sid] = seg.category
        ids = F.interpolate(s["label"][None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
        sem = F.interpolate(sem[None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
        out.append((x, sem, ids, s["segments"]))
    return out
tr, va = load("train", 720), load("val", 100)
chs = [f.shape[1] for f in bb(tr[0][0][None])]
head = nn.Sequential(nn.Conv2d(chs[1] + chs[2] + chs[3], 128, 3, padding=1), nn.GroupNorm(8, 128), nn.ReLU(),
                     nn.Conv2d(128, 128, 3, padding=1), nn.GroupNorm(8, 128), nn.ReLU(), nn.Conv2d(128, 7, 1))
def fwd(x):
    fs = bb(x) if train_bb else [f.detach() for f in bb(x)]
    s = fs[1].shape[-2:]
    z = torch.cat([fs[1]] + [F.interpolate(f, size=s, mode="bilinear") for f in fs[2:]], 1)
    return F.interpolate(head(z), size=x.shape[-2:], mode="bilinear")
params = list(head.parameters()) + (list(bb.parameters()) if train_bb else [])
opt = torch.optim.AdamW(params, 1e-3, weight_decay=1e-4)
rng = random.Random(0); t0 = time.time()
for step in range(steps):
    xs, ys = [], []
    for x, sem, _, _ in rng.sample(tr, 8):
        H, W = x.shape[-2:]; t = rng.randint(0, max(0, H - 128)); l = rng.randint(0, max(0, W - 128))
        xc = F.pad(x[:, t:t+128, l:l+128], (0, 128 - min(128, W - l), 0, 128 - min(128, H - t)))
        yc = F.pad(sem[t:t+128, l:l+128], (0, 128 - min(128, W - l), 0, 128 - min(128, H - t)), value=255)
        xs.append(xc); ys.append(yc)
    with torch.autocast("cpu", torch.bfloat16):
        logits = fwd(torch.stack(xs))
    loss = F.cross_entropy(logits.float(), torch.stack(ys), ignore_index=255)
    opt.zero_grad(); loss.backward(); opt.step()
bb.eval(); right = n = 0; pix = torch.zeros(7); pixn = torch.zeros(7)
with torch.no_grad():
    for x, sem, ids, segs in va:
        pred = fwd(x[None])[0].argmax(0)
        for sid, seg in segs.items():
            if seg.category > 2: continue
            m = ids == sid
            if m.sum() == 0: continue
            vote = torch.bincount(pred[m], minlength=7)[:3].argmax()
            right += int(vote == seg.category); n += 1
print(f"steps {steps} train_bb {train_bb} {time.time()-t0:.0f}s: val shapes by vote {right}/{n} = {right/n:.3f}")
