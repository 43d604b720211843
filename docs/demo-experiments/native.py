"""Stage 1 with thing crops at the scene's own scale: a fixed 96 px window centred on each shape (not its box
resized to 64), so that the backbone sees shapes at the sizes the scenes have. Throwaway experiment."""
import sys, time
import torch
from maskformer.demo import backbone as B

B.CROP = 96
WINDOW = 96

def native(image, mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    cy, cx = (int(ys.min()) + int(ys.max())) / 2, (int(xs.min()) + int(xs.max())) / 2
    h, w = image.shape[-2:]
    top = round(min(max(cy - WINDOW / 2, 0), h - WINDOW))
    left = round(min(max(cx - WINDOW / 2, 0), w - WINDOW))
    return image[:, top:top + WINDOW, left:left + WINDOW].float()

B._thing_crop = native
t = time.time()
r = B.pretrain_backbone(sys.argv[1], sys.argv[2], steps=int(sys.argv[3]), progress=False)
print(r, time.time() - t)
