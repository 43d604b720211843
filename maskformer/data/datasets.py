"""Dataset readers: semantic label PNGs (generic, ADE20K, Cityscapes), COCO panoptic and COCO instances.

Every dataset yields a dict ``{"image": uint8 [3, H, W], "label": int64 [H, W], "kind", "file", ...}``.
For semantic data ``label`` holds class indices with ``ignore_value`` on unlabelled pixels; for panoptic
data it holds segment ids (0 = void) and ``segments`` maps each id to its class and crowd flag. Instance
data, whose objects may overlap, keeps one mask per object in ``masks`` uint8 [N, H, W] with
``instances`` (class and crowd flag of each), and ``label`` marks the image's area (1; augmentation pads
with 0). Augment the sample jointly, then turn it into mask-classification targets with
:func:`make_targets`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..model.config import MetadataConfig
from .catalog import DATASETS
from .io import decode_segmentation, list_images, read_image, read_label, read_panoptic_png
from .metadata import (
    builtin_metadata,
    category_ids,
    cityscapes_label_id_to_train_id,
    load_class_file,
    metadata_from_json,
)

Sample = dict
Transform = Callable[[Sample], Sample]


@dataclass
class Annotation:
    """A ground-truth segment or instance as read: its contiguous class index and crowd flag (a prediction's
    segment is :class:`maskformer.predict.results.Segment`)."""

    category: int
    iscrowd: bool


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 3, 7, 255] -> '0-3, 7, 255'."""
    parts: list[str] = []
    for v in values:
        if parts and v == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ", ".join(parts)


class SemanticDataset(Dataset):
    """Images and label PNGs with the same stems; ``label_lut`` remaps raw label values (e.g. ADE20K's
    0 = ignore, 1..150 -> 0..149, or Cityscapes labelIds -> trainIds). A lut entry of -1 marks a raw value
    the format never uses: a label file holding one is refused, naming the file and the values."""

    def __init__(
        self,
        image_dir: str | Path,
        label_dir: str | Path,
        metadata: MetadataConfig,
        ignore_value: int = 255,
        label_lut: Tensor | None = None,
        label_suffix: str = ".png",
        label_name: Callable[[Path], str] | None = None,
        transform: Transform | None = None,
    ):
        self.images = list_images(image_dir)
        self.label_dir = Path(label_dir)
        if not self.label_dir.is_dir():
            raise FileNotFoundError(f"{self.label_dir}: label folder not found")
        if not self.images:
            raise ValueError(f"{image_dir}: no images found")
        name = label_name or (lambda p: str(p.relative_to(image_dir).with_suffix(label_suffix)))
        self.image_dir = Path(image_dir)
        self.labels = [self.label_dir / name(p) for p in self.images]
        self.metadata = metadata
        self.num_classes = len(metadata.class_names)
        self.ignore_value = ignore_value
        self.label_lut = label_lut
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        image = read_image(self.images[index])
        label = read_label(self.labels[index])
        if label.shape != image.shape[-2:]:
            raise ValueError(
                f"{self.labels[index]}: label size {tuple(label.shape)} differs from image size "
                f"{tuple(image.shape[-2:])} of {self.images[index]}"
            )
        if self.label_lut is not None:
            raw = label
            unknown = (raw >= len(self.label_lut)) | (self.label_lut[raw.clamp(0, len(self.label_lut) - 1)] < 0)
            if unknown.any():
                valid = _ranges((self.label_lut >= 0).nonzero().flatten().tolist())
                raise ValueError(
                    f"{self.labels[index]}: label values {sorted(set(raw[unknown].tolist()))[:5]} are not values of "
                    f"this format (it uses {valid}): a corrupt file, or labels of another dataset"
                )
            label = self.label_lut[raw]
        bad = (label >= self.num_classes) & (label != self.ignore_value)
        if bad.any():
            raise ValueError(
                f"{self.labels[index]}: label values {sorted(set(label[bad].tolist()))[:5]} are neither classes "
                f"0..{self.num_classes - 1} nor ignore ({self.ignore_value})"
            )
        return {"image": image, "label": label, "kind": "semantic", "file": str(self.images[index])}

    def __getitem__(self, index: int) -> Sample:
        sample = self.load(index)
        return self.transform(sample) if self.transform else sample


def generic_semantic(
    image_dir: str | Path, label_dir: str | Path, class_file: str | Path, ignore_value: int = 255, **kwargs
) -> SemanticDataset:
    """An image folder, a label-PNG folder with the same stems and a class list file."""
    return SemanticDataset(image_dir, label_dir, load_class_file(class_file), ignore_value, **kwargs)


def ade20k(root: str | Path, split: str = "training", **kwargs) -> SemanticDataset:
    """ADEChallengeData2016: label 0 is ignore, 1..150 become classes 0..149; 151..255 occur in no ADE20K
    label file and are refused."""
    root = Path(root)
    lut = torch.cat([torch.tensor([255]), torch.arange(150), torch.full((105,), -1)])
    return SemanticDataset(
        root / "images" / split,
        root / "annotations" / split,
        builtin_metadata(DATASETS["ade"].metadata),
        255,
        lut,
        **kwargs,
    )


def cityscapes(root: str | Path, split: str = "train", **kwargs) -> SemanticDataset:
    """leftImg8bit/{split}/{city}/*_leftImg8bit.png with gtFine/{split}/{city}/*_gtFine_labelIds.png;
    labelIds map to the 19 trainIds, the other ids (0..33) and 255 to ignore; 34..254 are no Cityscapes
    label id and are refused."""
    root = Path(root)
    lut = torch.full((256,), -1, dtype=torch.long)
    lut[:34] = 255
    lut[255] = 255
    for label_id, train_id in cityscapes_label_id_to_train_id().items():
        lut[label_id] = train_id
    image_dir = root / "leftImg8bit" / split

    def label_name(path: Path) -> str:
        rel = path.relative_to(image_dir)
        return str(rel.parent / rel.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))

    return SemanticDataset(
        image_dir,
        root / "gtFine" / split,
        builtin_metadata(DATASETS["cityscapes"].metadata),
        255,
        lut,
        label_name=label_name,
        **kwargs,
    )


class COCOPanopticDataset(Dataset):
    """COCO panoptic format: a JSON with ``images``, ``annotations`` (``segments_info``) and ``categories``
    (with ``isthing``), and one PNG of RGB-encoded segment ids per image."""

    def __init__(
        self,
        image_dir: str | Path,
        json_file: str | Path,
        png_dir: str | Path,
        transform: Transform | None = None,
    ):
        self.image_dir, self.png_dir, self.json_file = Path(image_dir), Path(png_dir), Path(json_file)
        if not self.json_file.exists():
            raise FileNotFoundError(f"{self.json_file}: panoptic annotation file not found")
        try:
            data = json.loads(self.json_file.read_text())
            categories = sorted(data["categories"], key=lambda c: c["id"])
            annotations = data["annotations"]
            images = {img["id"]: img for img in data.get("images", [])}
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{self.json_file}: not a COCO panoptic annotation file ({err})") from err
        self.category_index = {c["id"]: i for i, c in enumerate(categories)}
        self.metadata = metadata_from_json(
            {
                "dataset": self.json_file.stem,
                "classes": [{**c, "isthing": bool(c.get("isthing", 0))} for c in categories],
            },
            str(self.json_file),
        )
        self.categories = categories
        self.annotations = annotations
        self.image_files = []
        for ann in annotations:
            info = images.get(ann["image_id"], {})
            name = info.get("file_name") or Path(ann["file_name"]).with_suffix(".jpg").name
            self.image_files.append(self.image_dir / name)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.annotations)

    def load(self, index: int) -> Sample:
        ann = self.annotations[index]
        image = read_image(self.image_files[index])
        png = self.png_dir / ann["file_name"]
        ids = read_panoptic_png(png)
        if ids.shape != image.shape[-2:]:
            raise ValueError(f"{png}: size {tuple(ids.shape)} differs from image {self.image_files[index]}")
        segments = {}
        for seg in ann["segments_info"]:
            if seg["category_id"] not in self.category_index:
                raise ValueError(
                    f"{self.json_file}: segment {seg['id']} of {png.name} has unknown category {seg['category_id']}"
                )
            segments[int(seg["id"])] = Annotation(self.category_index[seg["category_id"]], bool(seg.get("iscrowd", 0)))
        return {
            "image": image,
            "label": ids,
            "segments": segments,
            "kind": "panoptic",
            "file": str(self.image_files[index]),
            "annotation": ann,
        }

    def __getitem__(self, index: int) -> Sample:
        sample = self.load(index)
        return self.transform(sample) if self.transform else sample


def coco_panoptic(root: str | Path, split: str = "val2017", **kwargs) -> COCOPanopticDataset:
    """The COCO layout: {split}/ images, annotations/panoptic_{split}.json and annotations/panoptic_{split}/."""
    root = Path(root)
    ds = COCOPanopticDataset(
        root / split,
        root / "annotations" / f"panoptic_{split}.json",
        root / "annotations" / f"panoptic_{split}",
        **kwargs,
    )
    if len(ds.categories) == 133 and [c["id"] for c in ds.categories] == sorted(
        category_ids(DATASETS["coco"].metadata)
    ):
        ds.metadata = builtin_metadata(DATASETS["coco"].metadata)
    return ds


class COCOInstanceDataset(Dataset):
    """COCO instance format: a JSON with ``images``, ``annotations`` (``segmentation`` as polygons,
    uncompressed or compressed RLE; ``iscrowd``) and ``categories``. Every category is a thing. Images
    without annotations are kept (they teach "no object")."""

    def __init__(self, image_dir: str | Path, json_file: str | Path, transform: Transform | None = None):
        self.image_dir, self.json_file = Path(image_dir), Path(json_file)
        if not self.json_file.exists():
            raise FileNotFoundError(f"{self.json_file}: instance annotation file not found")
        try:
            data = json.loads(self.json_file.read_text())
            categories = sorted(data["categories"], key=lambda c: c["id"])
            self.images = sorted(data["images"], key=lambda img: img["id"])
            by_image: dict[int, list[dict]] = {img["id"]: [] for img in self.images}
            for ann in data["annotations"]:
                if ann["image_id"] not in by_image:
                    raise ValueError(
                        f"{self.json_file}: annotation {ann.get('id')} refers to image {ann['image_id']}, which "
                        "is not in its 'images'"
                    )
                by_image[ann["image_id"]].append(ann)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{self.json_file}: not a COCO instance annotation file ({err})") from err
        self.category_index = {c["id"]: i for i, c in enumerate(categories)}
        self.metadata = metadata_from_json(
            {"dataset": self.json_file.stem, "classes": [{**c, "isthing": True} for c in categories]},
            str(self.json_file),
        )
        self.categories = categories
        self.annotations = [by_image[img["id"]] for img in self.images]
        self.image_files = [self.image_dir / img["file_name"] for img in self.images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        image = read_image(self.image_files[index])
        info = self.images[index]
        h, w = image.shape[-2:]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise ValueError(
                f"{self.json_file}: image {info['id']} is {info.get('height')} x {info.get('width')} in the JSON, "
                f"but {self.image_files[index]} is {h} x {w}"
            )
        masks, instances = [], []
        for ann in self.annotations[index]:
            where = f"{self.json_file}: annotation {ann.get('id')} of image {info['id']} ({info['file_name']})"
            if ann.get("category_id") not in self.category_index:
                raise ValueError(f"{where} has unknown category {ann.get('category_id')}")
            try:
                masks.append(torch.from_numpy(decode_segmentation(ann["segmentation"], h, w)))
            except (KeyError, ValueError, TypeError) as err:
                raise ValueError(f"{where}: bad segmentation ({err})") from err
            instances.append(Annotation(self.category_index[ann["category_id"]], bool(ann.get("iscrowd", 0))))
        return {
            "image": image,
            "label": torch.ones(h, w, dtype=torch.int64),
            "masks": torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.uint8),
            "instances": instances,
            "kind": "instance",
            "file": str(self.image_files[index]),
        }

    def __getitem__(self, index: int) -> Sample:
        sample = self.load(index)
        return self.transform(sample) if self.transform else sample


def coco_instance(root: str | Path, split: str = "val2017", **kwargs) -> COCOInstanceDataset:
    """The COCO layout: {split}/ images and annotations/instances_{split}.json."""
    root = Path(root)
    return COCOInstanceDataset(root / split, root / "annotations" / f"instances_{split}.json", **kwargs)


def has_targets(sample: Sample, ignore_value: int = 255) -> bool:
    """Whether :func:`make_targets` makes at least one target of the (augmented) sample: a pixel that is not
    ignore (semantic), a pixel of a non-crowd segment (panoptic), a non-crowd object with a pixel (instance).
    Cheaper than making them (no sort of the label map; it stops at the first found), for augmentation that
    draws again when a crop kept nothing."""
    label = sample["label"]
    if sample["kind"] == "semantic":
        return bool((label != ignore_value).any())
    if sample["kind"] == "instance":
        masks = sample["masks"]
        return any(not s.iscrowd and bool(masks[i].any()) for i, s in enumerate(sample["instances"]))
    return any(not s.iscrowd and bool((label == i).any()) for i, s in sample["segments"].items())


def make_targets(sample: Sample, ignore_value: int = 255) -> dict[str, Tensor]:
    """Mask-classification targets from an (augmented) sample.

    Semantic: one mask per class present (the original's MaskFormerSemanticDatasetMapper). Panoptic: one
    mask per non-crowd segment still visible; crowd and void pixels belong to no target. ``valid`` marks
    pixels that are neither ignore (semantic) nor void (panoptic id 0); augmentation pads with those values.
    Instance: one mask per non-crowd object with pixels left after augmentation (crowd objects are left
    out, as in Mask2Former's instance training); ``valid`` is the image's area.
    """
    label = sample["label"]
    if sample["kind"] == "semantic":
        classes = [int(c) for c in torch.unique(label).tolist() if c != ignore_value]
        labels = torch.tensor(classes, dtype=torch.long)
        masks = label[None] == labels[:, None, None] if classes else torch.zeros(0, *label.shape, dtype=torch.bool)
        valid = label != ignore_value
    elif sample["kind"] == "instance":
        masks = sample["masks"].bool()
        keep = [i for i, s in enumerate(sample["instances"]) if not s.iscrowd and bool(masks[i].any())]
        labels = torch.tensor([sample["instances"][i].category for i in keep], dtype=torch.long)
        masks = masks[keep] if keep else torch.zeros(0, *label.shape, dtype=torch.bool)
        valid = label != 0
    else:
        segments = sample["segments"]
        ids = [int(i) for i in torch.unique(label).tolist() if i in segments and not segments[i].iscrowd]
        labels = torch.tensor([segments[i].category for i in ids], dtype=torch.long)
        masks = (
            label[None] == torch.tensor(ids, dtype=torch.long)[:, None, None]
            if ids
            else torch.zeros(0, *label.shape, dtype=torch.bool)
        )
        valid = label != 0
    return {"labels": labels, "masks": masks, "valid": valid}


def semantic_label(sample: Sample, ignore_value: int = 255) -> Tensor:
    """The class-index map [H, W] of a sample (panoptic: each segment's class, crowd included; void -> ignore;
    instance: each object's class, later objects over earlier ones, background -> ignore)."""
    if sample["kind"] == "semantic":
        return sample["label"]
    if sample["kind"] == "instance":
        out = torch.full_like(sample["label"], ignore_value)
        for mask, instance in zip(sample["masks"], sample["instances"]):
            out[mask.bool()] = instance.category
        return out
    lut = {i: s.category for i, s in sample["segments"].items()}
    out = torch.full_like(sample["label"], ignore_value)
    for seg_id, category in lut.items():
        out[sample["label"] == seg_id] = category
    return out
