"""Semantic, panoptic and instance inference against hand computations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskformer.model import inference, padding

BIG = 12.0  # a logit that makes softmax/sigmoid essentially one-hot


def test_semantic_equals_naive_formula():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=gen)  # 2 images, 3 queries, K = 4
    masks = torch.randn(2, 3, 4, 4, generator=gen)  # stride-4 masks of a 16 x 16 padded batch
    sizes = [(13, 11), (16, 9)]
    outs = [(26, 22), (16, 9)]
    result = inference.semantic_inference(logits, masks, sizes, (16, 16), outs)
    for b, (size, out) in enumerate(zip(sizes, outs)):
        up = F.interpolate(masks[b : b + 1], size=(16, 16), mode="bilinear", align_corners=False)[0]
        up = up[:, : size[0], : size[1]].sigmoid()
        probs = logits[b].softmax(-1)
        scores = torch.zeros(4, *size)
        for c in range(4):
            for q in range(3):
                scores[c] += probs[q, c] * up[q]
        scores = F.interpolate(scores[None], size=out, mode="bilinear", align_corners=False)[0]
        assert result[b].shape == out
        assert torch.equal(result[b], scores.argmax(0))


def test_semantic_labels_computed_in_blocks_of_pixels(monkeypatch):
    """Labels at the input's size come from class scores computed a few pixels at a time (here blocks of 5
    pixels and a remainder of 3): every block lands on its own pixels. Checked against the scores in float64
    wherever the top two classes differ by more than float32's rounding of a sum of Q non-negative products
    can move them (at most 2 Q eps times the larger, with margin), and against the channels-last
    probabilities, which come from the same blocks."""
    queries, classes, size = 7, 19, (33, 41)
    monkeypatch.setattr(inference, "_CLASS_SCORE_BLOCK_BYTES", 4 * classes * 5)
    gen = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(1, queries, classes + 1, generator=gen)
    masks = 4 * torch.randn(1, queries, 9, 11, generator=gen)
    (labels,) = inference.semantic_inference(logits, masks, [size], (36, 44))
    probs, pixels = inference._query_scores(logits[0], masks[0], (36, 44), size)
    exact = (pixels.double().T @ probs.double()).view(*size, classes)
    top2 = exact.topk(2, dim=-1).values
    clear = top2[..., 0] - top2[..., 1] > 4 * queries * torch.finfo(torch.float32).eps * top2[..., 0]
    assert clear.float().mean() > 0.99  # the check below covers nearly every pixel
    assert torch.equal(labels[clear], exact.argmax(-1)[clear])
    (last,) = inference.semantic_probabilities(logits, masks, [size], (36, 44))
    assert torch.equal(labels, last.argmax(0))
    assert torch.allclose(last.permute(1, 2, 0).double(), exact, rtol=4 * queries * 2**-23, atol=0)


def one_hot_logits(classes, num_classes, scores=None):
    """Query logits whose softmax puts `score` on the class (index num_classes = no object)."""
    logits = torch.full((len(classes), num_classes + 1), -BIG)
    for q, c in enumerate(classes):
        logits[q, c] = BIG
        if scores is not None and scores[q] is not None:
            # Split the mass between the class and no-object to reach the given top score.
            s = scores[q]
            logits[q, num_classes] = BIG + torch.log(torch.tensor((1 - s) / s)).item()
    return logits


def test_panoptic_thresholds_overlap_and_stuff_merging():
    # Classes: 0 = person (thing), 1 = sky (stuff), 2 = grass (stuff). Image 8 x 8.
    h = w = 8
    masks = torch.full((6, h, w), -BIG)
    masks[0, :, :4] = BIG  # person, columns 0-3
    masks[1, :4, 5:] = BIG  # sky, top right
    masks[2, 4:, 5] = BIG  # sky again, bottom of column 5: merged with query 1
    masks[3, 4:, 6:] = BIG  # grass with a low score: dropped by the score threshold
    masks[4, :, :5] = 0.5 * BIG  # person over columns 0-4: wins only column 4 -> overlap rule drops it
    masks[5, :, :] = BIG  # predicts no object
    logits = one_hot_logits([0, 1, 1, 2, 0, 3], 3, scores=[0.99, 0.95, 0.9, 0.5, 0.85, None])
    (result,) = inference.panoptic_inference(
        logits[None],
        masks[None],
        [(h, w)],
        (h, w),
        thing_classes=[0],
        object_mask_threshold=0.8,
        overlap_threshold=0.8,
    )
    seg = result.segmentation
    assert [(s["id"], s["category_id"], s["isthing"]) for s in result.segments] == [(1, 0, True), (2, 1, False)]
    assert (seg[:, :4] == 1).all()
    assert (seg[:4, 5:] == 2).all() and (seg[4:, 5] == 2).all()
    assert result.segments[1]["area"] == 12 + 4
    # Query 4 won column 4, only 8 of its 40 mask pixels (< 0.8): dropped, and its pixels stay void.
    assert (seg[:, 4] == 0).all()
    # The dropped grass query's pixels go, by the argmax over kept queries, to the highest-scoring one.
    assert (seg[4:, 6:] == 1).all()
    assert result.segments[0]["area"] == 32 + 8
    assert abs(result.segments[0]["score"] - 0.99) < 1e-3
    assert int((seg > 0).sum()) == sum(s["area"] for s in result.segments)


def test_panoptic_void_when_nothing_is_kept_and_unknown_metadata_means_things():
    masks = torch.full((2, 4, 4), BIG)
    logits = one_hot_logits([3, 3], 3)  # both predict no object
    (empty,) = inference.panoptic_inference(logits[None], masks[None], [(4, 4)], (4, 4))
    assert empty.segments == [] and (empty.segmentation == 0).all()
    masks = torch.full((2, 4, 4), -BIG)
    masks[0, :2] = BIG
    masks[1, 2:] = BIG
    logits = one_hot_logits([1, 1], 3)
    (r,) = inference.panoptic_inference(logits[None], masks[None], [(4, 4)], (4, 4), thing_classes=None)
    assert [s["isthing"] for s in r.segments] == [True, True] and len(r.segments) == 2
    (merged,) = inference.panoptic_inference(logits[None], masks[None], [(4, 4)], (4, 4), thing_classes=[])
    assert len(merged.segments) == 1 and merged.segments[0]["area"] == 16


def test_panoptic_thresholds_plain_mask_not_score_weighted_mask():
    """A confident mask with a class score of 0.6 survives (transformers would drop it at 0.5 x 0.6 < 0.5)."""
    masks = torch.full((1, 4, 4), -BIG)
    masks[0, 1:3, 1:3] = 2.0  # sigmoid ~ 0.88
    logits = one_hot_logits([0], 2, scores=[0.6])
    (r,) = inference.panoptic_inference(
        logits[None], masks[None], [(4, 4)], (4, 4), thing_classes=[0], object_mask_threshold=0.5
    )
    assert len(r.segments) == 1 and r.segments[0]["area"] == 16  # argmax gives every pixel to the only query


def test_instance_scores_and_topk():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 4, 4, generator=gen)  # K = 3
    masks = torch.randn(1, 4, 6, 6, generator=gen)
    (r,) = inference.instance_inference(logits, masks, [(6, 6)], (6, 6), topk=5)
    assert len(r.scores) == 5 and (r.scores[:-1] >= r.scores[1:]).all()
    probs = logits[0].softmax(-1)[:, :-1]
    for mask, label, score in zip(r.masks, r.labels, r.scores):
        # Find the query this mask came from and recompute the score by hand.
        q = next(i for i in range(4) if torch.equal(masks[0, i] > 0, mask))
        inside = masks[0, q][mask].sigmoid().mean() if mask.any() else torch.tensor(0.0)
        assert torch.allclose(score, probs[q, label] * inside, atol=1e-5)
    (things,) = inference.instance_inference(logits, masks, [(6, 6)], (6, 6), topk=5, thing_classes=[2])
    assert (things.labels == 2).all() and len(things.labels) == 4


def test_pad_batch_and_predict_restore_sizes(tiny_model):
    images = [torch.rand(3, 37, 53) * 255, torch.rand(3, 64, 20) * 255]
    batch, sizes = padding.pad_batch(images, 32)
    assert batch.shape == (2, 3, 64, 64) and sizes == [(37, 53), (64, 20)]
    assert torch.equal(batch[0, :, :37, :53], images[0]) and (batch[0, :, 37:] == 0).all()
    semantic = tiny_model.predict(images, task="semantic")
    assert [tuple(s.shape) for s in semantic] == sizes
    assert all(int(s.max()) < 5 for s in semantic)
    panoptic = tiny_model.predict(images, task="panoptic", output_sizes=[(74, 106), (64, 20)])
    assert tuple(panoptic[0].segmentation.shape) == (74, 106)
    instances = tiny_model.predict(images, task="instance")
    assert instances[1].masks.shape[1:] == (64, 20)


def test_padding_does_not_change_an_image_alone_vs_in_a_batch(tiny_model):
    """Semantic maps of an image are the same whether it is batched with a larger image or not, up to the
    padding's influence through the network; with equal padded sizes they are identical."""
    a = torch.rand(3, 40, 50) * 255
    b = torch.rand(3, 60, 64) * 255
    alone = tiny_model.predict([a], task="semantic")[0]
    batched = tiny_model.predict([a, b], task="semantic")[0]
    assert alone.shape == batched.shape == (40, 50)
    # Both pad `a` to 64 x 64, so the inputs the network sees are identical.
    assert torch.equal(alone, batched)


def test_counts_of_float_masks_are_exact_past_float32s_integers():
    """Areas are counted as sums of 0.0 / 1.0 planes: float32 holds integers up to 2**24 only (2**24 + 3 ones
    sum to 2**24 + 4 or 2**24 in float32), so a larger plane is summed in float64."""
    n = (1 << 24) + 3
    assert inference._count_ones(torch.ones(n)).item() == n
    plane = torch.zeros(n)
    plane[::2] = 1.0
    assert inference._count_ones(plane).item() == (n + 1) // 2
    small = torch.tensor([0.0, 1.0, 1.0, 0.0])
    assert inference._count_ones(small).item() == 2
