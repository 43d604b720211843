"""``maskformer data prepare ade20k-full`` on a small ADE20K_2021_17_01 release (index_ade20k.pkl,
images/ADE/{training,validation}/.../*.jpg with *_seg.png), checked pixel by pixel against MaskFormer's
official rules written out here (class = R / 10 * 256 + G, the 847-class train ids, 65535 elsewhere, the
shorter side resized to 512 with OpenCV's nearest rule), then trained on and scored."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from maskformer.data.prepare.ade20k_full import object_id_to_train_id
from tests.helpers import prepare_dataset, train_and_score

# (object id, train id) of a few of the 847 classes: wall, building, sky, person, and the last one.
KNOWN = {2978: 0, 312: 1, 2420: 2, 1831: 11, 3148: 846}
UNKNOWN = 5  # an ADE object id outside the 847


def _seg_png(ids: np.ndarray) -> np.ndarray:
    """The release's encoding of object class ids: R = id // 256 * 10 (+ instance noise below 10), G = id % 256."""
    rgb = np.zeros((*ids.shape, 3), np.uint8)
    rgb[..., 0] = (ids // 256) * 10 + (np.arange(ids.size).reshape(ids.shape) % 7)
    rgb[..., 1] = ids % 256
    rgb[..., 2] = 3
    return rgb


def _write_raw(parent, seed=0):
    rng = np.random.default_rng(seed)
    root = parent / "ADE20K_2021_17_01"
    folders, names = [], []
    for k, (split, size) in enumerate([("training", (40, 56)), ("training", (530, 600)), ("validation", (48, 36)),
                                        ("validation", (700, 520))]):  # fmt: skip
        folder = f"ADE20K_2021_17_01/images/ADE/{split}/urban/street"
        name = f"ADE_{'train' if split == 'training' else 'val'}_{k:08d}.jpg"
        (parent / folder).mkdir(parents=True, exist_ok=True)
        h, w = size
        ids = np.full((h, w), 2420, np.int64)
        ids[h // 3 :] = 312
        ids[-h // 4 :] = 2978
        ids[h // 2 : h // 2 + 9, w // 3 : w // 3 + 7] = 1831
        ids[0:5, 0:5] = UNKNOWN
        ids[-3:, -3:] = 3148
        ids[1, -1] = 0
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(parent / folder / name, quality=95)
        Image.fromarray(_seg_png(ids)).save(parent / folder / name.replace(".jpg", "_seg.png"))
        folders.append(folder)
        names.append(name)
    with (root / "index_ade20k.pkl").open("wb") as f:
        pickle.dump({"folder": folders, "filename": names, "objectPresence": np.zeros((3, 4), np.int32)}, f)
    return root


def _official(seg: np.ndarray) -> np.ndarray:
    """The official label of a _seg.png: class ids, the resize (cv2 nearest written out), the train ids."""
    R, G = seg[:, :, 0], seg[:, :, 1]
    lab = (R / 10).astype(np.int32) * 256 + G.astype(np.int32)
    h, w = lab.shape
    if w >= h > 512:
        h_new, w_new = 512, round(w / float(h) * 512)
    elif h >= w > 512:
        h_new, w_new = round(h / float(w) * 512), 512
    else:
        h_new, w_new = h, w
    ys = [min(int(np.floor(y * (h / h_new))), h - 1) for y in range(h_new)]
    xs = [min(int(np.floor(x * (w / w_new))), w - 1) for x in range(w_new)]
    lab = lab[np.ix_(ys, xs)]
    table = object_id_to_train_id()
    out = np.zeros_like(lab, dtype=np.uint16) + 65535
    for obj_id in np.unique(lab):
        if obj_id in table:
            out[lab == obj_id] = table[obj_id]
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_dataset(tmp_path_factory, "ade20k-full", _write_raw)


def test_labels_equal_the_official_rules(prepared):
    raw, out = prepared
    assert all(object_id_to_train_id()[k] == v for k, v in KNOWN.items()) and len(object_id_to_train_id()) == 847
    index = pickle.loads((raw / "index_ade20k.pkl").read_bytes())
    for folder, name in zip(index["folder"], index["filename"]):
        split = "val" if name.split("_")[1] == "val" else "train"
        seg = np.asarray(Image.open(raw.parent / folder / name.replace(".jpg", "_seg.png")))
        label = np.asarray(Image.open(out / "labels" / split / name.replace(".jpg", ".png")))
        expected = _official(seg)
        assert label.dtype == np.uint16 and np.array_equal(label, expected), name
        assert {0, 1, 2, 11, 846, 65535} <= set(np.unique(label).tolist())
        image = Image.open(out / "images" / split / name)
        assert image.size == (label.shape[1], label.shape[0])
        assert min(image.size) <= 512
    classes = json.loads((out / "classes.json").read_text())
    assert len(classes["classes"]) == 847 and classes["ignore_value"] == 65535


def test_prepared_ade20k_full_trains_and_scores(prepared, tmp_path, capsys):
    _, out = prepared
    assert "mIoU" in train_and_score(out, tmp_path / "run", "r50_ade_full", capsys)
