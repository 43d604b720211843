"""Stage 1 of the demo, its "ImageNet": the backbone learns to tell the classes apart as an image classifier
of crops cut from the training images (each thing by its box, stuff by windows inside its segments), before
stage 2 trains the segmentation model from it through ``model.backbone.weights``, as the papers' recipes
start from ImageNet weights. Shapes are what a backbone trained from scratch by the set-prediction loss
learns slowly; a classifier learns them in a few hundred steps.

Only training images are cut: a tenth of them (every tenth image) is held out of the classifier's training
to report its accuracy, and the validation images are never read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from ..data.datasets import COCOPanopticDataset
from ..model.atomic import atomic_path

CROP = 64  # side of every crop fed to the classifier
THING_MARGIN = 1.15  # a thing's square crop: its box's longer side times this, centred on the box
STUFF_WINDOW = 40  # stuff: square windows of this side ...
STUFF_COVER = 0.9  # ... at least this share inside the segment ...
STUFF_WINDOWS = 2  # ... this many per segment
HELD_OUT_EVERY = 10


@dataclass
class Crops:
    """``images`` uint8 [N, 3, CROP, CROP], ``labels`` [N] class indices."""

    images: Tensor
    labels: Tensor


@dataclass
class PretrainedBackbone:
    """Stage 1's result: the timm-format state dict written to ``path``, the classifier's accuracy on the
    held-out crops (all classes and things alone), the crops it trained on and its seconds."""

    path: Path
    accuracy: float
    thing_accuracy: float
    train_crops: int
    held_out_crops: int
    seconds: float


def _resize(patch: Tensor) -> Tensor:
    return F.interpolate(patch[None].float(), size=(CROP, CROP), mode="bilinear", antialias=True)[0]


def _thing_crop(image: Tensor, mask: Tensor) -> Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    h, w = image.shape[-2:]
    side = min(max(y1 - y0, x1 - x0) * THING_MARGIN, h, w)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top = round(min(max(cy - side / 2, 0), h - side))
    left = round(min(max(cx - side / 2, 0), w - side))
    side = round(side)
    return _resize(image[:, top : top + side, left : left + side])


def _stuff_crops(image: Tensor, mask: Tensor, rng: np.random.Generator) -> list[Tensor]:
    """Up to STUFF_WINDOWS windows mostly inside ``mask``, at random among the positions that qualify."""
    k = STUFF_WINDOW
    if min(mask.shape) < k:
        return []
    # Pixels of the segment in every k x k window, from the summed-area table.
    table = F.pad(mask.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    inside = table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]
    tops, lefts = torch.nonzero(inside >= STUFF_COVER * k * k, as_tuple=True)
    if not len(tops):
        return []
    picks = rng.choice(len(tops), size=min(STUFF_WINDOWS, len(tops)), replace=False)
    return [_resize(image[:, int(tops[i]) : int(tops[i]) + k, int(lefts[i]) : int(lefts[i]) + k]) for i in picks]


def cut_crops(dataset: COCOPanopticDataset, indices: list[int], things: set[int], seed: int) -> Crops:
    """Crops of the segments of ``dataset``'s images ``indices``: one per thing, STUFF_WINDOWS per stuff
    segment; crowd segments are left out."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in indices:
        sample = dataset.load(index)
        image, ids = sample["image"], sample["label"]
        for seg_id, segment in sample["segments"].items():
            if segment.iscrowd:
                continue
            mask = ids == seg_id
            cut = [_thing_crop(image, mask)] if segment.category in things else _stuff_crops(image, mask, rng)
            images += cut
            labels += [segment.category] * len(cut)
    return Crops(torch.stack(images).round().clamp(0, 255).to(torch.uint8), torch.tensor(labels))


def _augment(batch: Tensor, generator: torch.Generator) -> Tensor:
    """Random flips and quarter turns: the classes are defined up to rotation and reflection."""
    turns = int(torch.randint(4, (1,), generator=generator))
    batch = torch.rot90(batch, turns, dims=(-2, -1))
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def pretrain_backbone(
    data_dir: str | Path,
    out: str | Path,
    name: str = "resnet18",
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    bf16: bool = False,
) -> PretrainedBackbone:
    """Train timm's ``name`` as a classifier of the crops of ``data_dir``'s training split (the synthetic
    layout: images/train, panoptic_train.json, panoptic/train) for ``steps`` steps of AdamW with a cosine
    schedule and channels-last, under bfloat16 autocast if ``bf16``; write its state dict, in timm's format, to
    ``out`` (a .safetensors file). ``pixel_mean`` / ``pixel_std`` normalise as the segmentation model will."""
    start = time.time()
    data_dir = Path(data_dir)
    dataset = COCOPanopticDataset(data_dir / "images" / "train", data_dir / "panoptic_train.json",
                                  data_dir / "panoptic" / "train")  # fmt: skip
    things = set(dataset.metadata.thing_classes or [])
    every = list(range(len(dataset)))
    held = [i for i in every if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    train = cut_crops(dataset, [i for i in every if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1], things, seed)
    test = cut_crops(dataset, held, things, seed + 1)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = timm.create_model(name, num_classes=len(dataset.metadata.class_names)).to(device)
    model = model.to(memory_format=torch.channels_last)
    mean = torch.tensor(pixel_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pixel_std, device=device).view(1, 3, 1, 1)
    # Fused: one pass over each parameter (the demo runs on the CPU or a CUDA GPU, both have the kernel).
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))

    def prepare(images: Tensor) -> Tensor:
        x = (images.to(device).float() - mean) / std
        return x.contiguous(memory_format=torch.channels_last)

    model.train()
    with tqdm(total=steps, desc="backbone", unit="step", disable=not progress) as bar:
        for _ in range(steps):
            pick = torch.randint(len(train.labels), (batch_size,), generator=generator)
            x = prepare(_augment(train.images[pick], generator))
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), train.labels[pick].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            bar.update(1)
    model.eval()
    predicted = []
    with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        for chunk in test.images.split(256):
            predicted.append(model(prepare(chunk)).argmax(1).cpu())
    right = torch.cat(predicted) == test.labels
    is_thing = torch.tensor([int(c) in things for c in test.labels])
    out = Path(out)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "library": "timm", "architecture": name})
    return PretrainedBackbone(
        out, right.float().mean().item(), right[is_thing].float().mean().item(), len(train.labels),
        len(test.labels), round(time.time() - start, 1),
    )  # fmt: skip
