"""``maskformer predict`` and the Predictor API on locally built hub-format and model-zoo checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.cli.main import main
from maskformer.data.io import read_panoptic_png
from maskformer.model import MaskFormer
from maskformer.precision import Bf16Speed
from maskformer.predict import Predictor
from tests.helpers import hf_to_detectron2, tiny_config, write_zoo_pickle


@pytest.fixture(scope="module")
def confident_hf(hf_checkpoints, tmp_path_factory):
    """The random R50 transformers checkpoint with a sharpened class head, so that queries pass the
    panoptic score threshold and files have segments in them; saved as a hub folder and a zoo pickle."""
    _, hf = hf_checkpoints["r50"]
    hf = copy.deepcopy(hf)
    with torch.no_grad():
        hf.class_predictor.weight.mul_(40)
    folder = tmp_path_factory.mktemp("hub_r50")
    hf.save_pretrained(folder)
    zoo = tmp_path_factory.mktemp("zoo") / "model_final.pkl"
    write_zoo_pickle(hf_to_detectron2(hf.state_dict()), zoo)
    return folder, zoo


def _images(folder, sizes=((48, 64), (70, 40))):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return dict(zip([f"img{i}" for i in range(len(sizes))], sizes))


def _check_outputs(out, task, sizes, categories_expected=150):
    overlays = sorted(p.stem for p in (out / "overlays").glob("*.png"))
    assert overlays == sorted(sizes)
    if task == "semantic":
        for name, size in sizes.items():
            label = np.asarray(Image.open(out / "labels" / f"{name}.png"))
            assert label.shape == size and label.max() < categories_expected
    elif task == "panoptic":
        data = json.loads((out / "panoptic.json").read_text())
        assert len(data["categories"]) == categories_expected
        assert sum(len(a["segments_info"]) for a in data["annotations"]) > 0
        for ann in data["annotations"]:
            ids = read_panoptic_png(out / "panoptic" / ann["file_name"]).numpy()
            assert ids.shape == sizes[ann["image_id"]]
            present = {int(v) for v in np.unique(ids)} - {0}
            assert present == {s["id"] for s in ann["segments_info"]}
            for s in ann["segments_info"]:
                assert s["area"] == int((ids == s["id"]).sum())
    else:
        from pycocotools.coco import COCO

        gt = COCO()
        gt.dataset = dict(json.loads((out / "images.json").read_text()), annotations=[])
        gt.createIndex()
        results = json.loads((out / "instances.json").read_text())
        assert results
        dt = gt.loadRes(str(out / "instances.json"))
        for ann in dt.anns.values():
            img = gt.imgs[ann["image_id"]]
            assert dt.annToMask(ann).shape == (img["height"], img["width"])


@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_predict_cli_on_hub_and_zoo_checkpoints(confident_hf, tmp_path, monkeypatch, task):
    folder, zoo = confident_hf
    sizes = _images(tmp_path / "images")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, allow_patterns=None: str(folder))
    # A model-zoo URL whose name carries the file's md5 prefix, as the official ones do.
    digest = hashlib.md5(zoo.read_bytes()).hexdigest()[:6]
    url = f"https://dl.fbaipublicfiles.com/maskformer/test/model_final_{digest}.pkl"
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda u, dst, progress=True: shutil.copy(zoo, dst))
    for source in ("facebook/maskformer-resnet50-ade", url):
        out = tmp_path / f"out_{source[-6:]}"
        argv = ["predict", str(tmp_path / "images"), "--model", source, "--task", task, "--out", str(out), "--quiet"]
        # Random weights rarely pass the paper's thresholds; these keep every query that wins pixels.
        assert main([*argv, "--score-threshold", "0.05", "--overlap-threshold", "0"]) == 0
        _check_outputs(out, task, sizes)


def test_zoo_checksum_is_verified_and_models_are_listed(confident_hf, tmp_path, monkeypatch, capsys):
    """A zoo file whose md5 does not match its name is refused and not cached."""
    _, zoo = confident_hf
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda u, dst, progress=True: shutil.copy(zoo, dst))
    with pytest.raises(ValueError, match="md5"):
        Predictor.from_pretrained("zoo-ade20k-r50")
    assert not list((tmp_path / "cache").glob("*"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "maskformer-swin-tiny-ade" in out and "46.7" in out and "model_final_d8dbeb.pkl" in out


def test_zoo_pickle_gets_builtin_metadata(confident_hf):
    _, zoo = confident_hf
    predictor = Predictor.from_pretrained(zoo)
    meta = predictor.metadata
    assert meta.class_names[0] == "wall" and meta.thing_classes and len(meta.colors) == 150


@pytest.fixture
def tiny_predictor():
    torch.manual_seed(0)
    config = tiny_config(num_classes=5, backbone="resnet18", queries=8)
    config.inference.test_shortest_edge = 64
    config.inference.test_max_size = 160
    return Predictor(MaskFormer(config))


def _odd_images(folder):
    """Files of every kind a camera or an editor produces -> expected (height, width) after EXIF rotation."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    expected = {}
    Image.fromarray(rgb).save(folder / "rgb.png")
    expected["rgb"] = (30, 50)
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    expected["gray"] = (30, 50)
    Image.fromarray(np.dstack([rgb, rng.integers(0, 255, (30, 50), dtype=np.uint8)])).save(folder / "rgba.png")
    expected["rgba"] = (30, 50)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    expected["palette"] = (30, 50)
    Image.fromarray(rng.integers(0, 65535, (30, 50), dtype=np.uint16)).save(folder / "deep16.png")
    expected["deep16"] = (30, 50)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 50 wide x 30 high, shown rotated 90 degrees: 30 wide x 50 high
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif)
    expected["rotated"] = (50, 30)
    Image.fromarray(rgb[:1, :1]).save(folder / "one.png")
    expected["one"] = (1, 1)
    Image.fromarray(rgb[:2, :3]).save(folder / "tiny.png")  # three wide: not to be taken for channels
    expected["tiny"] = (2, 3)
    Image.fromarray(rgb[:10, :3]).save(folder / "narrow.png")
    expected["narrow"] = (10, 3)
    Image.fromarray(np.full((3024, 4032, 3), 90, dtype=np.uint8)).save(folder / "huge.jpg", quality=50)
    expected["huge"] = (3024, 4032)
    return expected


def test_every_odd_image_kind_goes_through_predict(tiny_predictor, tmp_path):
    expected = _odd_images(tmp_path / "odd")
    folder = tmp_path / "m"
    tiny_predictor.model.save_pretrained(folder)
    for task in ("semantic", "panoptic", "instance"):
        out = tmp_path / task
        argv = ["predict", str(tmp_path / "odd"), "--model", str(folder), "--task", task, "--out", str(out)]
        assert main([*argv, "--quiet", "--batch-size", "3"]) == 0
        for name, size in expected.items():
            overlay = Image.open(out / "overlays" / f"{name}.png")
            assert overlay.size[0] >= size[1] and overlay.size[1] >= size[0]
            if task == "semantic":
                assert np.asarray(Image.open(out / "labels" / f"{name}.png")).shape == size
            if task == "panoptic":
                assert read_panoptic_png(out / "panoptic" / f"{name}.png").shape == size
        if task == "instance":
            images = {im["file_name"]: im for im in json.loads((out / "images.json").read_text())["images"]}
            for name, size in expected.items():
                (im,) = [
                    v
                    for k, v in images.items()
                    if k.endswith(f"/{name}" + (".jpg" if name in ("rotated", "huge") else ".png"))
                ]
                assert (im["height"], im["width"]) == size


def test_inputs_of_every_type_agree(tiny_predictor, tmp_path):
    rng = np.random.default_rng(2)
    array = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    inputs = [
        tmp_path / "a.png",
        str(tmp_path / "*.png"),
        Image.fromarray(array),
        array,
        torch.from_numpy(array).permute(2, 0, 1),
    ]
    results = tiny_predictor(inputs, task="semantic")
    assert [r.name for r in results[:2]] == ["a", "a"]
    for r in results[1:]:
        assert torch.equal(r.label_map, results[0].label_map)
    assert results[0].label_map.shape == (37, 53)
    panoptic = tiny_predictor(array, task="panoptic")[0]
    assert all(s.area == int((panoptic.segmentation == s.id).sum()) for s in panoptic.segments_info)
    assert panoptic.draw(array).size[0] >= 53


def test_sliding_window_and_tta_agree_with_plain_inference(tiny_predictor):
    image = torch.randint(0, 255, (3, 45, 70), dtype=torch.uint8)
    plain = tiny_predictor(image)[0].label_map
    item = tiny_predictor.predict_loaded
    from maskformer.predict import LoadedImage

    loaded = [LoadedImage(image, "x")]
    # One window covering the whole resized image (64 x 100) is plain inference.
    ((_, one_window),) = item(loaded, window=128)
    assert torch.equal(one_window.label_map, plain)
    # The augmentation path at scale 1 without flip is plain inference too.
    tta = tiny_predictor._semantic_augmented(loaded[0], scales=(1.0,), flip=False, window=None, window_stride=None)
    assert torch.equal(tta.label_map, plain)
    # Overlapping windows and multi-scale + flip run and give full-size maps.
    ((_, windows),) = item(loaded, window=32, window_stride=16)
    ((_, multi),) = item(loaded, scales=(0.5, 1.0, 1.5), flip=True)
    assert windows.label_map.shape == multi.label_map.shape == (45, 70)
    with pytest.raises(ValueError, match="semantic.*only"):
        list(item(loaded, task="panoptic", flip=True))


def test_reduced_precisions_run(tiny_predictor):
    image = torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8)
    fp32 = tiny_predictor(image)[0].label_map
    for precision in ("bf16", "fp16"):
        tiny_predictor.precision = precision
        semantic, panoptic, instance = (tiny_predictor(image, task=t)[0] for t in ("semantic", "panoptic", "instance"))
        assert semantic.label_map.shape == fp32.shape and semantic.label_map.dtype == torch.int64
        assert panoptic.segmentation.shape == fp32.shape and panoptic.segmentation.dtype == torch.int32
        assert instance.masks.shape[1:] == fp32.shape and instance.masks.dtype == torch.bool
        assert torch.isfinite(instance.scores).all()


def test_resize_argmax_one_class_at_a_time_equals_one_full_resize():
    from maskformer.predict.predictor import resize_argmax

    probs = torch.rand(7, 13, 17)
    probs[5] = probs[2]  # tied classes: the first wins, as argmax's
    for size in ((101, 89), (5, 6), (13, 17)):
        full = torch.nn.functional.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
        assert torch.equal(resize_argmax(probs, size), full.argmax(0))


def test_bf16_semantic_maps_agree_with_fp32():
    """The bf16 path changes class maps only where classes nearly tie (a model with decisive class scores,
    as a trained one has; the demo model's figure is in benchmarks/RESULTS.md)."""
    torch.manual_seed(3)
    config = tiny_config(num_classes=5, backbone="resnet18", queries=8)
    config.inference.test_shortest_edge = 96
    model = MaskFormer(config)
    with torch.no_grad():
        model.predictor.class_embed.weight.mul_(20)
    predictor = Predictor(model)
    images = [torch.randint(0, 255, (3, 80 + 8 * i, 120), dtype=torch.uint8) for i in range(4)]
    fp32 = [r.label_map for r in predictor(images)]
    predictor.precision = "bf16"
    bf16 = [r.label_map for r in predictor(images)]
    same = sum(int((a == b).sum()) for a, b in zip(fp32, bf16))
    assert same / sum(a.numel() for a in fp32) >= 0.995


@pytest.mark.parametrize("variant", ["swin", "resnet18+6enc"])
def test_bf16_runs_a_bfloat16_copy_and_leaves_the_model_float32(variant):
    torch.manual_seed(4)
    config = tiny_config(num_classes=5, backbone=variant.split("+")[0], queries=8)
    if variant.endswith("+6enc"):
        config.pixel_decoder = dataclasses.replace(
            config.pixel_decoder, type="transformer_encoder", encoder_layers=2, encoder_ffn_dim=64
        )
    config.inference.test_shortest_edge = 64
    predictor = Predictor(MaskFormer(config))
    image = torch.randint(0, 255, (3, 50, 70), dtype=torch.uint8)
    fp32 = predictor(image)[0].label_map
    predictor.precision = "bf16"
    bf16 = predictor(image)[0].label_map
    assert predictor._network().pixel_mean.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in predictor.model.parameters())
    assert bf16.shape == fp32.shape and (bf16 == fp32).float().mean() > 0.5
    predictor.precision = "fp32"
    assert torch.equal(predictor(image)[0].label_map, fp32)


@pytest.mark.parametrize("speedup", [0.02, 3.0])
def test_bf16_on_a_cpu_that_emulates_bfloat16_says_fp32_is_faster(speedup, monkeypatch, caplog):
    """One warning, when the bfloat16 copy is made, where bfloat16 is measured slower (as on an AVX2-only CPU);
    none where it is faster."""
    monkeypatch.setattr("maskformer.predict.predictor.bf16_speed", lambda device: Bf16Speed(speedup))
    config = tiny_config(num_classes=5, queries=8)
    config.inference.test_shortest_edge = 32
    predictor = Predictor(MaskFormer(config), precision="bf16")
    image = torch.randint(0, 255, (3, 40, 40), dtype=torch.uint8)
    with caplog.at_level(logging.WARNING, logger="maskformer"):
        predictor(image)
        predictor(image)
    said = [r.getMessage() for r in caplog.records if "fp32 predicts faster" in r.getMessage()]
    if speedup < 1:
        assert said == ["precision bf16: bfloat16 matrix products ran at 0.02x float32's speed here: no bfloat16 "
                        "arithmetic; fp32 predicts faster on this CPU"]  # fmt: skip
    else:
        assert said == []


def test_inputs_are_scaled_by_their_bit_depth():
    from maskformer.data.io import array_to_tensor

    twelve_bit = np.linspace(0, 4095, 64, dtype=np.uint16).reshape(8, 8)  # 12-bit data in a 16-bit file
    assert int(array_to_tensor(twelve_bit).max()) == round(4095 / 257)  # dim, as any 16-bit reader shows it
    assert int(array_to_tensor(np.full((2, 2), 65535, np.int32)).max()) == 255
    assert int(array_to_tensor(torch.rand(3, 5, 5, dtype=torch.bfloat16)).max()) <= 255
    assert array_to_tensor(np.zeros((4, 3, 3), np.uint8)).shape == (3, 4, 3)
    rgb = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)  # already the Predictor's format: the same pixels,
    copied = array_to_tensor(rgb)  # in memory of their own
    assert torch.equal(copied, rgb) and copied.data_ptr() != rgb.data_ptr()
    assert torch.equal(array_to_tensor(rgb.permute(1, 2, 0).numpy()), rgb)  # as a numpy [H, W, C] array


def test_panoptic_files_use_dataset_category_ids_and_unique_names(tmp_path):
    from maskformer.model.config import MetadataConfig
    from maskformer.predict import PanopticResult, PredictionWriter, Segment

    config = tiny_config(num_classes=3, backbone="resnet18", queries=4)
    config.metadata = MetadataConfig(class_names=["a", "b", "c"], thing_classes=[0], category_ids=[10, 20, 30])
    meta = Predictor(MaskFormer(config)).metadata
    assert meta.category_ids == [10, 20, 30] and meta.class_names == ["a", "b", "c"] and len(meta.colors) == 3
    seg = torch.zeros(6, 8, dtype=torch.int32)
    seg[:3], seg[3:, :4] = 1, 2
    segments = [Segment(1, 0, "a", 0.9, 24, True), Segment(2, 2, "c", 0.8, 12, False)]
    writer = PredictionWriter(tmp_path / "out", "panoptic")
    for folder in ("first", "second"):  # two images with the same stem
        result = PanopticResult("x", (6, 8), meta, seg, segments, path=tmp_path / folder / "x.png")
        writer.add(torch.zeros(3, 6, 8, dtype=torch.uint8), result)
    writer.close()
    data = json.loads((tmp_path / "out" / "panoptic.json").read_text())
    assert [a["image_id"] for a in data["annotations"]] == ["x", "x_1"] == [im["id"] for im in data["images"]]
    assert [a["file_name"] for a in data["annotations"]] == ["x.png", "x_1.png"]
    assert [c["id"] for c in data["categories"]] == [10, 20, 30]
    infos = data["annotations"][1]["segments_info"]
    assert [(s["id"], s["category_id"], s["isthing"], s["area"]) for s in infos] == [(1, 10, 1, 24), (2, 30, 0, 12)]
    assert read_panoptic_png(tmp_path / "out" / "panoptic" / "x_1.png").equal(seg.long())
