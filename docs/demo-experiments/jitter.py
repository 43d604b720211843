"""Stage 1 with thing crops of varied context: the box times a random margin from 1.15 to 3 (the shape
filling a sixth to all of the crop, with its neighbours), resized to 64. Throwaway experiment."""
import sys, time
import numpy as np
import torch
from maskformer.demo import backbone as B

rng = np.random.default_rng(0)

def jittered(image, mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    h, w = image.shape[-2:]
    side = min(max(y1 - y0, x1 - x0) * rng.uniform(1.15, 3.0), h, w)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top = round(min(max(cy - side / 2, 0), h - side))
    left = round(min(max(cx - side / 2, 0), w - side))
    side = round(side)
    return B._resize(image[:, top:top + side, left:left + side])

B._thing_crop = jittered
t = time.time()
print(B.pretrain_backbone(sys.argv[1], sys.argv[2], steps=int(sys.argv[3]), progress=False), time.time() - t)
