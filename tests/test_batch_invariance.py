"""A batch of images of mixed sizes gives exactly the results of each image alone, for every family and all
three tasks (transformers#39382, Mask2Former#189: padding to the batch's largest image leaks into features).
The reference is built by hand from the network and the post-processing, not by the batching code under
test; without exact invariance, batches of one padded size stay within a stated tolerance of it."""

from __future__ import annotations

import pytest
import torch

from maskformer.model import Segmenter, inference, padding, test_resize
from maskformer.predict import Predictor
from tests.helpers import FAMILIES, small_config, tiny_config, tiny_m2f_config

# Mixed sizes: two share a padded size, the others do not; all smaller than the test size, so the model sees
# them resized to different shapes.
SIZES = [(90, 120), (70, 110), (200, 150), (64, 300)]


def _model(family: str, batch_invariant: bool = True) -> Segmenter:
    torch.manual_seed(0)
    config = {"maskformer": tiny_config, "mask2former": tiny_m2f_config, "eomt": lambda: small_config("eomt")}[family]()
    config.inference.test_shortest_edge, config.inference.test_max_size = 96, 320
    config.inference.batch_invariant = batch_invariant
    config.metadata.thing_classes = [0, 1, 2]
    if family == "eomt":  # a random ViT's masks overlap much: at 0.8 no segment keeps enough of its mask
        config.inference.overlap_threshold = 0.3
    model = Segmenter.from_config(config).eval()
    with torch.no_grad():  # confident, varied predictions, so that thresholds and overlaps matter
        model.class_head.weight.mul_(20)
    return model


def _images() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.rand(3, h, w, generator=gen) * 255).round() for h, w in SIZES]


def _assert_equal(task: str, batched, single) -> None:
    if task == "semantic":
        assert torch.equal(batched, single)
    elif task == "panoptic":
        assert torch.equal(batched.segmentation, single.segmentation)
        assert batched.segments == single.segments
    else:
        assert torch.equal(batched.masks, single.masks)
        assert torch.equal(batched.labels, single.labels) and torch.equal(batched.scores, single.scores)


def _alone(model: Segmenter, image: torch.Tensor, task: str):
    """``image`` by hand: resized for test, normalised, padded to its own padded size, one forward of the
    network, post-processed at its size (no batching, grouping or result-routing code)."""
    cfg = model.config.inference
    x = model.normalize(test_resize.resize_for_test(image, cfg))
    batch, sizes = padding.pad_batch([x], cfg.size_divisibility)
    with torch.no_grad():
        out = model(batch, with_aux=False)
    padded, size = tuple(batch.shape[-2:]), [tuple(image.shape[-2:])]
    things = model.config.metadata.thing_classes
    return inference.postprocess(task, out.logits, out.masks, sizes, padded, size, cfg, things)[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_batch_equals_one_at_a_time(family, task):
    model, images = _model(family), _images()
    batched = model.predict(images, task)
    for image, result in zip(images, batched):
        _assert_equal(task, result, _alone(model, image, task))
    if task == "panoptic":
        assert sum(len(r.segments) for r in batched) > 0  # the comparison is not between empty results


@pytest.mark.parametrize("family", FAMILIES)
def test_batches_without_invariance_stay_within_the_stated_tolerance(family):
    """``inference.batch_invariant=false`` forwards the images of one padded size together: the batched
    convolutions and matrix products round differently, so a few pixels whose classes nearly tie may change.
    Stated tolerance: at most 0.5% of an image's pixels change class."""
    model = _model(family, batch_invariant=False)
    gen = torch.Generator().manual_seed(2)
    images = [(torch.rand(3, h, w, generator=gen) * 255).round() for h, w in [(90, 120), (96, 125), (70, 110)]]
    resized = [model.normalize(test_resize.resize_for_test(i, model.config.inference)) for i in images]
    assert sorted(len(g.indices) for g in model.forward_groups(resized)) == [1, 2]  # two share a padded size
    batched = model.predict(images, "semantic")
    for image, labels in zip(images, batched):
        assert (labels != _alone(model, image, "semantic")).float().mean() <= 0.005


@pytest.mark.parametrize("family", FAMILIES)
def test_predictor_batches_equal_single_images(family):
    model, images = _model(family), _images()
    one = Predictor(model, batch_size=1)(images, task="panoptic")
    four = Predictor(model, batch_size=4)(images, task="panoptic")
    for a, b in zip(one, four):
        assert torch.equal(a.segmentation, b.segmentation) and a.segments_info == b.segments_info


@pytest.mark.parametrize("family", FAMILIES)
def test_grouped_batches_never_mix_padded_sizes(family):
    """Without exact invariance, images are batched only with images of their padded size: the logits then
    differ from one image at a time by float rounding alone, where padding to the largest image changed them."""
    model, images = _model(family, batch_invariant=False), _images()
    normalised = [model.normalize(img) for img in images]
    groups = list(model.forward_groups(normalised))
    assert sorted(len(g.indices) for g in groups) == [1, 1, 2]
    for group in groups:
        for j, i in enumerate(group.indices):
            (alone,) = model.forward_groups([normalised[i]])
            assert group.padded == alone.padded
            assert torch.allclose(group.logits[j], alone.logits[0], atol=1e-4)
            assert torch.allclose(group.masks[j], alone.masks[0], atol=1e-4)
    padded, _ = model.preprocess(images)  # everything padded to the largest image, as before
    with torch.no_grad():
        leaked = model(padded).logits[0]
    assert not torch.allclose(leaked, groups[0].logits[0], atol=1e-3)
