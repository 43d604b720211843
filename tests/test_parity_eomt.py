"""EoMT equals transformers' EomtForUniversalSegmentation with equal weights (issue 25, work in progress).

The oracle's eager attention takes its softmax in float32 whatever the input's type, and its SDPA path adds a
float32 mask to float64 scores wrongly; the test gives it an eager attention in the input's own precision, so
that float64 compares the formulations and not the oracle's rounding."""

from __future__ import annotations

import pytest
import torch

from maskformer.model.families import eomt
from maskformer.model.families.eomt import EoMT, adapt_transformers_state, config_from_transformers, transformers_rules
from maskformer.model.weights.renaming import rename_state_dict
from tests.helpers import blob_targets, small_config

transformers = pytest.importorskip("transformers")
modeling = pytest.importorskip("transformers.models.eomt.modeling_eomt")
# EoMT with a DINOv3 ViT (transformers' "eomt_dinov3"): timm's Eva with rotary position embeddings.
modeling3 = pytest.importorskip("transformers.models.eomt_dinov3.modeling_eomt_dinov3")


def _exact_eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask.to(weights.dtype)
    weights = weights.softmax(-1)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _tiny(**changes) -> transformers.EomtConfig:
    """A transformers EoMT config small enough for a CPU test: 4 layers of width 32, 2 heads, 64 x 64 input,
    5 queries in the last 2 blocks, 3 classes (``changes`` override any of it)."""
    settings = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=64, num_queries=5,
                    num_blocks=2, num_labels=3)  # fmt: skip
    return transformers.EomtConfig(**{**settings, **changes})


def _tiny3(**changes) -> transformers.EomtDinov3Config:
    """A transformers EoMT-DINOv3 config as small as :func:`_tiny` (MLP width 72)."""
    settings = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=72, image_size=64,
                    num_queries=5, num_blocks=2, num_labels=3)  # fmt: skip
    return transformers.EomtDinov3Config(**{**settings, **changes})


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-6)])
@pytest.mark.parametrize("registers,swiglu,queries,classes", [(4, False, 5, 3), (0, True, 7, 1)])
@pytest.mark.parametrize("prob", [1.0, 0.0])
def test_eomt_equals_transformers(monkeypatch, dtype, tolerance, registers, swiglu, queries, classes, prob):
    monkeypatch.setattr(modeling, "eager_attention_forward", _exact_eager)
    torch.manual_seed(0)
    config = _tiny(
        num_queries=queries,
        num_labels=classes,
        num_register_tokens=registers,
        use_swiglu_ffn=swiglu,
        layerscale_value=0.5,
    )
    hf = _perturbed(transformers.EomtForUniversalSegmentation, config, prob)
    ours = _ours(hf)
    hf.to(dtype)
    ours.to(dtype)
    _assert_equal_outputs(hf, ours, dtype, tolerance)


def _perturbed(model_class: type, config, prob: float | None = None):
    """transformers' model of ``config`` with eager attention and every parameter away from its initialisation
    (``prob``: every mask probability)."""
    hf = model_class(config).eval()
    hf.config._attn_implementation = "eager"
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.2 * torch.randn_like(p))
        if prob is not None:
            hf.attn_mask_probs.fill_(prob)
    return hf


def _ours(hf) -> EoMT:
    """This package's EoMT with the weights of transformers' ``hf``, loaded strictly."""
    ours = EoMT(config_from_transformers(hf.config.to_dict())).eval()
    renamed = rename_state_dict(hf.state_dict(), transformers_rules(ours.config))
    assert not renamed.unmatched
    ours.load_state_dict(adapt_transformers_state(renamed.state_dict), strict=True)
    return ours


def _assert_equal_outputs(hf, ours: EoMT, dtype: torch.dtype, tolerance: float) -> None:
    """Both models' class and mask logits of one random batch within ``tolerance``."""
    x = torch.randn(2, 3, 64, 64, dtype=dtype)
    with torch.no_grad():
        theirs, mine = hf(pixel_values=x), ours(x)
    assert mine.masks.shape == theirs.masks_queries_logits.shape == (2, hf.config.num_queries, 16, 16)
    assert (mine.logits - theirs.class_queries_logits).abs().max() <= tolerance
    assert (mine.masks - theirs.masks_queries_logits).abs().max() <= tolerance


@pytest.mark.parametrize("dinov3", [False, True])
def test_equal_loss_under_the_same_sampled_points(monkeypatch, dinov3):
    """transformers' EoMT loss (Mask2Former's, on the final prediction and each masked block's) against this
    package's criterion on the same prediction: one seed, the same points drawn in the same order; with a
    DINOv2 and a DINOv3 ViT (in eval mode, where neither rescales the DINOv3's rotary positions: in training
    both draw a scale, each from its own random stream)."""
    from maskformer.model import SetCriterion

    modeling_module, model_class, tiny = (
        (modeling3, transformers.EomtDinov3ForUniversalSegmentation, _tiny3)
        if dinov3
        else (modeling, transformers.EomtForUniversalSegmentation, _tiny)
    )
    monkeypatch.setattr(modeling_module, "eager_attention_forward", _exact_eager)
    torch.manual_seed(0)
    config = tiny(num_queries=6, num_labels=4, train_num_points=300)
    hf = _perturbed(model_class, config)
    ours = _ours(hf)
    criterion = SetCriterion.from_config(ours.config)
    assert ours.config.loss.num_points == 300 and ours.config.loss.class_weight == config.class_weight
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    targets = blob_targets(gen, (3, 2), 4, (64, 64))
    with torch.no_grad():
        torch.manual_seed(4)
        ref = hf(pixel_values=x, mask_labels=[t["masks"] for t in targets], class_labels=[t["labels"] for t in targets])
        torch.manual_seed(4)
        losses = criterion(ours(x, with_aux=True), targets)
    assert len(losses) == 3 * 3  # the final prediction's and the two masked blocks'
    total = sum(losses.values()).item()
    assert abs(total - ref.loss.item()) <= 1e-5 * abs(total), (total, ref.loss.item())


def test_a_photo_is_padded_to_the_square_with_black_pixels_as_transformers_and_the_official_code_pad(monkeypatch):
    """Panoptic and instance inference on a photo that is not square: the model sees what transformers' EoMT
    processor with ``do_pad`` (and the official evaluation's ``resize_and_pad_imgs_instance_panoptic``) gives
    it, the image at the top left of a black square of the image size, so equal weights give equal outputs.
    With MaskFormer's and Mask2Former's padding (to multiples of 32, in the mean colour), a ViT, which attends
    to every token, gave other outputs (here a 32 x 64 input, mask logits up to 35 away where they are about 4;
    a random ViT-S at 640 x 480: 7.7 where they are about 1)."""
    monkeypatch.setattr(modeling, "eager_attention_forward", _exact_eager)
    torch.manual_seed(0)
    hf = _perturbed(transformers.EomtForUniversalSegmentation, _tiny(), prob=0.0)
    ours = _ours(hf)
    assert ours.config.inference.pad_square == 64
    image = torch.randint(0, 256, (3, 24, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    processor = transformers.EomtImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)
    pixels = processor(images=[image.permute(1, 2, 0).numpy()], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64)
    with torch.no_grad():
        theirs = hf(pixel_values=pixels)
        (group,) = ours.forward_groups([ours.normalize(image.float())])
    assert group.padded == (64, 64) and group.sizes == [(24, 64)]
    assert (group.logits - theirs.class_queries_logits).abs().max() <= 1e-4
    assert (group.masks - theirs.masks_queries_logits).abs().max() <= 1e-4
    batch, sizes = ours.preprocess([image.float()])
    assert torch.allclose(batch, pixels, atol=1e-5) and sizes == [(24, 64)]


def test_eomt_takes_any_size_and_predicts_through_the_shared_pipeline():
    """Position embeddings are resampled to the input's grid (timm's resample_abs_pos_embed), so EoMT takes
    sizes transformers' model does not, and the Segmenter pipeline (resize, pad, post-process) runs on it."""
    config = config_from_transformers(_tiny().to_dict())
    config.inference.test_shortest_edge, config.inference.test_max_size = 64, 128
    model = EoMT(config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 128))
    assert out.masks.shape == (1, 5, 24, 32) and out.logits.shape == (1, 5, 4)
    images = [torch.randint(0, 256, (3, 50, 90)).float(), torch.randint(0, 256, (3, 70, 40)).float()]
    for task in ("semantic", "panoptic", "instance"):
        results = model.predict(images, task=task)
        assert len(results) == 2
    labels = model.predict(images, task="semantic")
    assert [tuple(r.shape) for r in labels] == [(50, 90), (70, 40)]


@pytest.mark.parametrize("band_bytes", [1, 5 * 4 * 16 * 32 * 2 * 8])
def test_masks_predicted_in_bands_equal_the_whole_maps(monkeypatch, band_bytes):
    """Without autograd the last ScaleBlock and the mask products run in bands of rows (one row; five of the
    twelve, so the last band is short); with it, on whole maps. float64: the same formula gives the same values
    to rounding, and a wrong band edge (a missing or extra row of the 3x3 convolution, or its zero padding)
    moves values by the order of the weights."""
    monkeypatch.setattr(eomt, "BAND_BYTES", band_bytes)
    monkeypatch.setattr(eomt, "MIN_BAND_ROWS", 1)
    torch.manual_seed(0)
    model = EoMT(small_config("eomt", width=32)).eval().to(torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
        model.attn_mask_probs.zero_()
    x = torch.randn(2, 3, 96, 128, dtype=torch.float64)
    whole = model(x)  # autograd on: whole maps
    with torch.no_grad():
        banded = model(x)
    assert banded.masks.shape == whole.masks.shape == (2, 10, 24, 32)
    assert (banded.masks - whole.masks.detach()).abs().max() <= 1e-10 * whole.masks.abs().max()


def _official_mask_annealing(start_iter, current_iter, final_iter, poly_power=0.9):
    """The official training's formula (training/lightning_module.py, mask_annealing), restated."""
    if current_iter < start_iter:
        return torch.ones(1)
    if current_iter >= final_iter:
        return torch.zeros(1)
    progress = torch.tensor((current_iter - start_iter) / (final_iter - start_iter))
    return (1.0 - progress).pow(poly_power)


def test_the_annealing_schedule_is_the_official_one_at_every_step():
    """COCO panoptic EoMT-L 640's annealing (configs/dinov2/coco/panoptic/eomt_large_640.yaml): every step of
    the 12 epochs, every block."""
    from maskformer.model.families.eomt import mask_probability

    starts, ends = (14782, 29564, 44346, 59128), (29564, 44346, 59128, 73910)
    for step in range(0, 73910 + 2, 7):
        for start, end in zip(starts, ends):
            assert float(mask_probability(start, step, end, 0.9)) == float(_official_mask_annealing(start, step, end))


def test_a_short_training_anneals_the_masks_away_and_inference_then_skips_them():
    from maskformer.model.families.eomt import anneal

    config = config_from_transformers(_tiny().to_dict())
    config.eomt.anneal_start, config.eomt.anneal_end = (1, 2), (3, 4)
    model = EoMT(config)
    seen = []
    for step in range(5):
        anneal(model, step, 5)
        seen.append(model.attn_mask_probs.tolist())
    assert seen[0] == [1.0, 1.0] and seen[-1] == [0.0, 0.0] and 0 < seen[2][0] < 1
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), with_aux=True)
    assert out.aux == []  # no intermediate prediction once every probability is 0


@pytest.mark.parametrize("l2_enabled", [True, False])
def test_layer_decay_is_the_official_one(l2_enabled):
    """The official configure_optimizers (llrd 0.8, lr_mult 1; llrd_l2_enabled its default true, and false as
    the DINOv3 configs set it), restated on the network's parameter names: walking them in reverse, a block's
    parameters at 0.8 ** (B - 1 - block), what comes before block 0 as block 0, the ViT's final norm and the
    rest at the base rate; without llrd_l2, the blocks the queries run through at the base rate too."""
    from maskformer.model.families.eomt import layer_decay

    config = config_from_transformers(_tiny(num_hidden_layers=6).to_dict())
    config.eomt.decay_query_blocks = l2_enabled
    model = EoMT(config)
    backbone_names = {f"backbone.{n}" for n, _ in model.backbone.named_parameters()}
    blocks, block_i, official = 6, 6, {}
    l2_blocks = range(blocks - config.eomt.num_blocks, blocks)
    for name, _ in reversed(list(model.named_parameters())):
        lr = 1.0
        if name in backbone_names:
            parts = name.split(".")
            is_block = "blocks" in parts
            if is_block:
                block_i = int(parts[parts.index("blocks") + 1])
            if is_block or block_i == 0:
                lr *= 0.8 ** (blocks - 1 - block_i)
            if "backbone.norm" in name:
                lr = 1.0
            if is_block and block_i in l2_blocks and not l2_enabled:
                lr = 1.0
        official[name] = lr
    ours = {name: layer_decay(config, name, 1.0) for name, _ in model.named_parameters()}
    assert ours == pytest.approx(official)
    assert ours["backbone.pos_embed"] == pytest.approx(0.8**5) and ours["query.weight"] == 1.0
    assert ours["backbone.blocks.4.mlp.fc1.weight"] == pytest.approx(0.8 if l2_enabled else 1.0)


def test_a_vit_backbone_file_loads_checked_by_its_names(tmp_path):
    """``model.backbone.weights`` for the ViT: a timm-format file loads (resampled by timm to the configured
    grid), a file of another ViT is one line naming the keys."""
    from safetensors.torch import save_file

    from maskformer.model.backbone import build_vit
    from maskformer.model.config import BackboneConfig

    kwargs = {"patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "init_values": 1.0}
    cfg = BackboneConfig(type="timm", name="vit_small_patch14_reg4_dinov2", timm_kwargs=kwargs)
    source = build_vit(cfg, 64)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    cfg.weights = str(tmp_path / "vit.safetensors")
    loaded = build_vit(cfg, 96)  # another size: position embeddings resampled from the file's 4 x 4 grid
    assert torch.equal(loaded.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert loaded.pos_embed.shape[1] == 36
    other = BackboneConfig(type="timm", name=cfg.name, timm_kwargs={**kwargs, "depth": 3}, weights=cfg.weights)
    with pytest.raises(ValueError, match=r"vit.safetensors: not a state dict .*\(14 weights missing: blocks\.2\.attn"):
        build_vit(other, 64)


@pytest.mark.parametrize("swiglu", [False, True])
def test_an_official_checkpoint_reads_its_architecture_and_loads_strictly(swiglu):
    """A state dict named as the official code names it (``network.``, its ViT under ``encoder.backbone.``)
    gives back the architecture and every weight."""
    from maskformer.model.families.eomt import official_config, official_recognises, official_rules

    config = config_from_transformers(
        _tiny(hidden_size=64, num_hidden_layers=3, num_attention_heads=1, image_size=48, num_queries=7, num_labels=4,
              use_swiglu_ffn=swiglu).to_dict()
    )  # fmt: skip
    model = EoMT(config)
    ours_to_official = [
        (r"backbone\.(.*)", r"network.encoder.backbone.\1"),
        (r"query\.weight", "network.q.weight"),
        (r"class_predictor\.(\w+)", r"network.class_head.\1"),
        (r"(mask_head|upscale|attn_mask_probs)(.*)", r"network.\1\2"),
    ]
    official = rename_state_dict(model.state_dict(), ours_to_official).state_dict
    official["network.encoder.pixel_mean"] = torch.zeros(1, 3, 1, 1)
    assert official_recognises(official)
    read = official_config(official)
    assert (read.eomt.num_queries, read.eomt.num_blocks, read.eomt.image_size, read.num_classes) == (7, 2, 48, 4)
    again = EoMT(read)
    renamed = rename_state_dict(official, official_rules(read))
    assert not renamed.unmatched
    again.load_state_dict(renamed.state_dict, strict=True)
    x = torch.randn(1, 3, 48, 48)
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(x).masks, again(x).masks)


def test_transformers_folders_and_official_files_load_through_the_registry(monkeypatch, tmp_path):
    """``Segmenter.from_pretrained`` (what every command's ``--model`` goes through) reads a transformers EoMT
    folder and an official ``network.``-keyed file as EoMT networks, strictly, with transformers' outputs (one
    head of 64 channels: official files do not show heads, DINOv2's 64 channels per head are assumed)."""
    from maskformer.model import Segmenter

    monkeypatch.setattr(modeling, "eager_attention_forward", _exact_eager)
    torch.manual_seed(0)
    config = _tiny(hidden_size=64, num_attention_heads=1)
    hf = transformers.EomtForUniversalSegmentation(config).eval()
    hf.config._attn_implementation = "eager"
    hf.save_pretrained(tmp_path / "hf")
    model = Segmenter.from_pretrained(tmp_path / "hf", strict=True).eval()
    assert type(model) is EoMT and model.load_report.ok
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x).masks - hf(pixel_values=x).masks_queries_logits).abs().max() <= 1e-4
    official = {f"network.encoder.{k}" if k.startswith("backbone.") else f"network.{k}": v
                for k, v in model.state_dict().items()}  # fmt: skip
    official = {k.replace("network.query.", "network.q.").replace("network.class_predictor.", "network.class_head."): v
                for k, v in official.items()}  # fmt: skip
    torch.save(official, tmp_path / "pytorch_model.bin")
    again = Segmenter.from_pretrained(tmp_path / "pytorch_model.bin", strict=True).eval()
    with torch.no_grad():
        assert torch.equal(again(x).masks, model(x).masks)


@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_predict_runs_an_eomt_transformers_folder(tmp_path, task):
    """``maskformer predict --model FOLDER`` with a transformers EoMT folder writes every task's outputs."""
    import numpy as np
    from PIL import Image

    from maskformer.cli.main import main

    torch.manual_seed(0)
    config = _tiny(hidden_size=64, num_attention_heads=1)
    transformers.EomtForUniversalSegmentation(config).save_pretrained(tmp_path / "hf")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(50, 70), (64, 40)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "out"
    assert main(["predict", str(images), "--model", str(tmp_path / "hf"), "--task", task, "--out", str(out)]) == 0
    expected = {"semantic": ["labels/0.png", "labels/1.png"], "panoptic": ["panoptic.json", "panoptic/1.png"],
                "instance": ["instances.json", "images.json"]}[task]  # fmt: skip
    assert all((out / name).is_file() for name in [*expected, "overlays/0.png", "overlays/1.png"])


def _exact_rotary_tables(monkeypatch, hf, ours) -> None:
    """Both implementations build their rotary tables partly in float32: the frequencies (transformers'
    1 / theta ** e, timm's periods theta ** e, rounded differently) and, in transformers', the patch
    coordinates times 2 pi. Those roundings moved the float64 test's masks by up to 5e-7; with every step in
    float64 (both frequency tables set, transformers' coordinates made in float64) float64 compares the
    formulations."""
    exponents = torch.arange(0, 1, 4 / (hf.config.hidden_size // hf.config.num_attention_heads), dtype=torch.float64)
    theta = hf.config.rope_parameters["rope_theta"]
    hf.rope_embeddings.inv_freq = 1 / theta**exponents
    ours.backbone.rope.periods = theta**exponents
    coordinates = modeling3.get_patches_center_coordinates
    monkeypatch.setattr(
        modeling3,
        "get_patches_center_coordinates",
        lambda h, w, dtype, device: coordinates(h, w, torch.float64, device),
    )


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-6)])
@pytest.mark.parametrize("registers,queries,classes", [(4, 5, 3), (0, 7, 1)])
@pytest.mark.parametrize("prob", [1.0, 0.0])
def test_eomt_dinov3_equals_transformers(monkeypatch, dtype, tolerance, registers, queries, classes, prob):
    """The queries get no rotary position (timm's Eva leaves the first num_prefix_tokens tokens unrotated, so
    the last blocks count the queries among them); q and v biases, layer scale."""
    monkeypatch.setattr(modeling3, "eager_attention_forward", _exact_eager)
    torch.manual_seed(0)
    config = _tiny3(num_queries=queries, num_labels=classes, num_register_tokens=registers, layerscale_value=0.5)
    hf = _perturbed(transformers.EomtDinov3ForUniversalSegmentation, config, prob)
    ours = _ours(hf)
    assert ours.backbone.pos_embed is None
    hf.to(dtype)
    ours.to(dtype)
    if dtype == torch.float64:
        _exact_rotary_tables(monkeypatch, hf, ours)
    _assert_equal_outputs(hf, ours, dtype, tolerance)


def _dinov3_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers EoMT-DINOv3 state dict under the official code's names (models/vit.py renames the
    DINOv3ViTModel's embeddings patch_embed and its layers blocks; models/eomt.py names the rest)."""
    rules = [
        (r"embeddings\.(.*)", r"network.encoder.backbone.patch_embed.\1"),
        (r"layers\.(.*)", r"network.encoder.backbone.blocks.\1"),
        (r"layernorm\.(.*)", r"network.encoder.backbone.norm.\1"),
        (r"query\.weight", "network.q.weight"),
        (r"class_predictor\.(.*)", r"network.class_head.\1"),
        (r"mask_head\.fc([123])\.(.*)", lambda m: f"network.mask_head.{2 * (int(m[1]) - 1)}.{m[2]}"),
        (r"upscale_block\.block\.(\d+)\.layernorm2d\.(.*)", r"network.upscale.\1.norm.\2"),
        (r"upscale_block\.block\.(.*)", r"network.upscale.\1"),
        (r"attn_mask_probs", "network.attn_mask_probs"),
        (r"criterion\..*", None),
    ]
    renamed = rename_state_dict(state, rules)
    assert not renamed.unmatched
    return {**renamed.state_dict, "network.encoder.pixel_mean": torch.zeros(1, 3, 1, 1)}


def test_eomt_dinov3_transformers_folders_and_official_files_load_through_the_registry(monkeypatch, tmp_path):
    """``Segmenter.from_pretrained`` reads a transformers "eomt_dinov3" folder and an official EoMT-DINOv3 file
    (absolute weights, as the official code writes with ``--model.delta_weights False``) strictly, with
    transformers' outputs. The official file's architecture is read off its weights, with DINOv3's own
    settings for what they do not show (64 channels per head, LayerNorm epsilon 1e-5, rotary base 100)."""
    from maskformer.model import Segmenter

    monkeypatch.setattr(modeling3, "eager_attention_forward", _exact_eager)
    torch.manual_seed(0)
    config = _tiny3(hidden_size=64, num_attention_heads=1, intermediate_size=128, num_hidden_layers=3,
                    layer_norm_eps=1e-5)  # fmt: skip
    hf = _perturbed(transformers.EomtDinov3ForUniversalSegmentation, config)
    hf.save_pretrained(tmp_path / "hf")
    model = Segmenter.from_pretrained(tmp_path / "hf", strict=True).eval()
    assert type(model) is EoMT and model.load_report.ok and model.config.backbone.name.endswith("_dinov3_qkvb")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = hf(pixel_values=x).masks_queries_logits
        assert (model(x).masks - expected).abs().max() <= 1e-4
    torch.save(_dinov3_official(hf.state_dict()), tmp_path / "pytorch_model.bin")
    official = Segmenter.from_pretrained(tmp_path / "pytorch_model.bin", strict=True).eval()
    assert official.load_report.ok and official.config.eomt.num_blocks == 2
    with torch.no_grad():
        assert (official(x).masks - expected).abs().max() <= 1e-4


def test_eomt_dinov3_refuses_what_timm_cannot_build(tmp_path):
    """A gated MLP (transformers would also switch the mask head's activation, the official code would not) and
    a key bias are one line naming the file."""
    for change, words in (({"use_gated_mlp": True}, "use_gated_mlp"), ({"key_bias": True}, "biases")):
        data = _tiny3(**change).to_dict()
        with pytest.raises(ValueError, match=rf"^hf/config.json: .*{words}"):
            config_from_transformers(data, "hf/config.json")


def test_an_official_dinov3_delta_checkpoint_loads_onto_its_base_weights(tmp_path):
    """The official EoMT-DINOv3 files hold differences from the model training started from (DINOv3's ViT,
    every other parameter zero, the mask probabilities 1): ``delta_base`` (``convert --delta-base``) adds
    them back onto a timm-format file of the base ViT, giving the trained model's outputs; read as absolute
    weights, the same file gives another model."""
    from safetensors.torch import save_file

    from maskformer.cli.main import main
    from maskformer.model import Segmenter

    torch.manual_seed(0)
    config = _tiny3(hidden_size=64, num_attention_heads=1, intermediate_size=128, num_hidden_layers=3,
                    layer_norm_eps=1e-5)  # fmt: skip
    trained_hf = _perturbed(transformers.EomtDinov3ForUniversalSegmentation, config, prob=0.0)  # a finished model
    base_hf = _perturbed(transformers.EomtDinov3ForUniversalSegmentation, config)
    trained, base = _dinov3_official(trained_hf.state_dict()), _dinov3_official(base_hf.state_dict())
    start = {k: v if k.startswith("network.encoder.") else torch.zeros_like(v) for k, v in base.items()}
    start["network.attn_mask_probs"] = torch.ones(2)
    torch.save({k: trained[k] - start[k] for k in trained}, tmp_path / "pytorch_model.bin")
    base_hf.save_pretrained(tmp_path / "base")
    base_vit = Segmenter.from_pretrained(tmp_path / "base", strict=True).backbone.state_dict()
    save_file({k: v.contiguous() for k, v in base_vit.items()}, str(tmp_path / "dinov3.safetensors"))

    model = Segmenter.from_pretrained(
        tmp_path / "pytorch_model.bin", strict=True, delta_base=tmp_path / "dinov3.safetensors"
    ).eval()
    assert model.load_report.ok and model.attn_mask_probs.tolist() == [0.0, 0.0]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = trained_hf(pixel_values=x).masks_queries_logits
        assert (model(x).masks - expected).abs().max() <= 1e-4
        absolute = Segmenter.from_pretrained(tmp_path / "pytorch_model.bin").eval()
        assert (absolute(x).masks - expected).abs().max() > 1e-2
    out = tmp_path / "converted"
    args = [
        "convert",
        "--model",
        str(tmp_path / "pytorch_model.bin"),
        "--delta-base",
        str(tmp_path / "dinov3.safetensors"),
    ]
    assert main([*args, "--out", str(out), "--strict"]) == 0
    with torch.no_grad():
        assert torch.equal(Segmenter.from_pretrained(out, strict=True).eval()(x).masks, model(x).masks)
