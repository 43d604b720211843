"""cut_things.py [DATA]: the share of the training crops' things that the demo's augmentation cuts at the crop's
border (the demo's scale range 0.75-1.5, then at most 1.0), simulated on the training images' boxes: resize to
fit 128 x scale, a random 128-pixel crop, three passes. DATA defaults to $DEMO_DATA or demo-output/data."""
import json, os, sys

import numpy as np

data = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DEMO_DATA", "demo-output/data")
d = json.load(open(os.path.join(data, "panoptic_train.json")))
things = {c["id"] for c in d["categories"] if c["isthing"]}
images = {i["id"]: i for i in d["images"]}
rng = np.random.default_rng(0)
for lo, hi in ((0.75, 1.5), (0.75, 1.0)):
    cut = total = 0
    for _ in range(3):
        for a in d["annotations"]:
            h, w = images[a["image_id"]]["height"], images[a["image_id"]]["width"]
            s = rng.uniform(lo, hi)
            f = min(128 * s / h, 128 * s / w)
            H, W = round(h * f), round(w * f)
            ch, cw = min(128, H), min(128, W)
            top, left = rng.integers(0, H - ch + 1), rng.integers(0, W - cw + 1)
            for seg in a["segments_info"]:
                if seg["category_id"] not in things:
                    continue
                x, y, bw, bh = (v * f for v in seg["bbox"])
                total += 1
                cut += x < left - 0.5 or y < top - 0.5 or x + bw > left + cw + 0.5 or y + bh > top + ch + 0.5
    print(f"scale {lo}-{hi}: {cut / total:.2f} of {total} things cut by the crop")
