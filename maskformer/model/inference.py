"""From (class, mask) pairs to semantic, panoptic and instance segmentation (paper section 3.4).

All functions take the raw model outputs for a padded batch plus each image's un-padded size, remove the
padding and resize to the requested output size the way the original does: mask logits are upsampled
bilinearly to the padded input size and cropped first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import InferenceConfig, Size


@dataclass
class PanopticResult:
    """``segmentation`` [H, W] int32 segment ids (0 = void); ``segments`` COCO-panoptic style records
    with keys id, category_id (contiguous class index), isthing, score and area."""

    segmentation: Tensor
    segments: list[dict] = field(default_factory=list)


@dataclass
class InstanceResult:
    """``masks`` [M, H, W] bool, ``labels`` [M] class indices, ``scores`` [M], sorted by score."""

    masks: Tensor
    labels: Tensor
    scores: Tensor


def _resize_into(image: Tensor, out: Tensor) -> Tensor:
    """``image`` [1, C, h, w] resized bilinearly (align_corners=False) into ``out`` [1, C, H, W]: the values of
    ``F.interpolate(image, size=(H, W), mode="bilinear")``, bit for bit.

    Written into memory the caller reuses: a fresh 12 MP float plane is 48 MiB that the allocator maps anew and
    the kernel page-faults in on every call, which took half of each resize's 29 ms (timed alone).
    ``F.interpolate`` has no ``out`` argument; its ``upsample_bilinear2d`` operator has, in ``torch.ops.aten``.
    """
    torch.ops.aten.upsample_bilinear2d.out(image, list(out.shape[-2:]), False, None, None, out=out)
    return out


def _index_type(count: int) -> torch.dtype:
    """The smallest integer type for indices below ``count`` that masked_fill_ writes fast: int16 moves a quarter
    of int64's memory."""
    return torch.int16 if count <= 1 << 15 else torch.int64


# Comparisons are written as float 0.0 / 1.0 planes, and copied into bool ones where a bool mask is needed: torch
# vectorises float comparisons into float, float sums and float-to-bool copies, not comparisons into bool, counts of
# a bool tensor or bool-to-float copies (512 x 512, AMD EPYC, 2 threads: 51 against 90 us for a comparison, 25
# against 89 for the copy, 20 against 36 for the count). The values are the same either way.
# float32 holds every integer up to 2**24: a sum of that many 0.0 / 1.0 values is exact in any order.
_EXACT_FLOAT_COUNT = 1 << 24


def _count_ones(plane: Tensor) -> Tensor:
    """The number of 1.0s in a float plane of 0.0 / 1.0 values, exactly (a float64 sum past 2**24 elements)."""
    return plane.sum() if plane.numel() <= _EXACT_FLOAT_COUNT else plane.sum(dtype=torch.float64)


def resize_argmax(probs: Tensor, size: tuple[int, int]) -> Tensor:
    """argmax over classes of ``probs`` [K, h, w] bilinearly resized to ``size`` -> [H, W] int64.

    Equal, bit for bit, to ``interpolate(probs[None].float(), size)[0].argmax(0)`` for finite probabilities (a NaN
    does not win a pixel here), computed one class plane at a time:
    each plane is resized as it is among the others, and a later class takes a pixel only with a strictly
    higher value (argmax's first-wins rule). Three planes at the output size exist at once instead of K (a
    photo's 150 ADE20K planes would be 7 GB), and at 640 x 480 it is faster than one whole resize.
    """
    k, h, w = probs.shape
    if k == 0:
        raise ValueError("resize_argmax: probabilities of no class")
    if (h, w) == tuple(size):
        return probs.argmax(0)
    probs = probs.contiguous()  # class planes (cheap at the input's size; a channels-last view reads strided)
    best = F.interpolate(probs[None, :1].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    plane = torch.empty_like(best)[None, None]  # every later class plane, resized into the same memory
    greater = torch.empty_like(best)
    better = torch.empty(size, dtype=torch.bool, device=best.device)
    winner = torch.zeros(size, dtype=_index_type(k), device=best.device)
    for c in range(1, k):
        _resize_into(probs[None, c : c + 1].float(), plane)
        winner.masked_fill_(better.copy_(torch.gt(plane[0, 0], best, out=greater)), c)
        torch.maximum(best, plane[0, 0], out=best)
    return winner.long()


# Class scores are computed for this many bytes of pixels at a time: a block stays in the CPU's L2 cache between
# the product that writes it and the argmax that reads it, and no [H*W, K] tensor is page-faulted in.
_CLASS_SCORE_BLOCK_BYTES = 1 << 20


def _query_scores(logits: Tensor, masks: Tensor, padded_size: Size, size: Size) -> tuple[Tensor, Tensor]:
    """One image's class probabilities [Q, K] (no-object dropped) and mask probabilities [Q, H*W] at its
    un-padded ``size``: softmax of ``logits`` [Q, K + 1], sigmoid of ``masks`` [Q, h/4, w/4] upsampled."""
    probs = logits.float().softmax(-1)[:, :-1]
    # Each mask's crop is copied into the result (:func:`_padded_crops`): all of them upsampled at once were a
    # second fresh [Q, padded size] tensor (144 MB for 100 queries at 512 x 704, page-faulted in) and a strided
    # copy. The sigmoid runs in place.
    pixels = torch.empty((masks.shape[0], *size), dtype=torch.float32, device=masks.device)
    for crop, dest in zip(_padded_crops(masks, padded_size, size), pixels):
        dest.copy_(crop)
    return probs, pixels.flatten(1).sigmoid_()


def _padded_crops(masks: Tensor, padded_size: Size, image_size: Size) -> Iterator[Tensor]:
    """Each of ``masks`` [N, h/4, w/4] upsampled to the padded input size and cropped to the image, as
    the original does (bilinearly) before any resize to an output size: an [H, W] view, in the masks' dtype,
    of one plane that the next mask overwrites. The same values as upsampling them together (the upsampling is
    per plane), without a fresh [N, padded size] tensor."""
    plane = masks.new_empty((1, 1, *padded_size))
    for mask in masks:
        yield _resize_into(mask[None, None], plane)[0, 0, : image_size[0], : image_size[1]]


def _class_score_blocks(pixels: Tensor, probs: Tensor, out: Tensor | None = None) -> Iterator[tuple[slice, Tensor]]:
    """``pixels.T @ probs`` ([H*W, K] class scores from mask probabilities [Q, H*W] and class probabilities
    [Q, K]) one block of pixels at a time: (the block's pixels, its [B, K] scores), written into ``out``
    [H*W, K] when given, else into one buffer reused by the next block.

    Every caller gets the same products of the same blocks, so an argmax over a block equals the argmax over
    the same pixels of ``out``, bit for bit, whatever the matrix library does with other shapes."""
    count, k = pixels.shape[1], probs.shape[1]
    rows = max(1, _CLASS_SCORE_BLOCK_BYTES // (probs.element_size() * k))
    buffer = probs.new_empty(min(rows, count), k) if out is None else None
    for start in range(0, count, rows):
        block = slice(start, min(start + rows, count))
        dest = out[block] if buffer is None else buffer[: block.stop - start]
        yield block, torch.mm(pixels[:, block].T, probs, out=dest)


def semantic_probabilities(
    pred_logits: Tensor,
    pred_masks: Tensor,
    image_sizes: Sequence[Size],
    padded_size: Size,
    output_sizes: Sequence[Size] | None = None,
    channels_last: bool | None = None,
) -> list[Tensor]:
    """Per image, sum_i softmax(p_i)[c] * sigmoid(m_i) over queries -> [K, H, W] (no-object dropped).

    Computed at the input size and then resized to the output size, as the original does by default.
    ``channels_last`` (default: when no resize follows) lays the result out as a [K, H, W] view of [H, W, K]
    memory, computed in blocks of pixels as :func:`semantic_inference` computes it: an argmax over classes then
    reads contiguous memory, several times faster; resizing wants class planes.
    """
    output_sizes = output_sizes or image_sizes
    results = []
    for logits, masks, size, out in zip(pred_logits, pred_masks, image_sizes, output_sizes):
        probs, pixels = _query_scores(logits, masks, padded_size, size)
        last = tuple(out) == tuple(size) if channels_last is None else channels_last
        if last:
            sem = probs.new_empty(pixels.shape[1], probs.shape[1])
            for _ in _class_score_blocks(pixels, probs, out=sem):
                pass
            sem = sem.view(*size, -1).permute(2, 0, 1)
        else:
            sem = (probs.T @ pixels).view(-1, *size)
        if tuple(out) != tuple(size):
            sem = F.interpolate(sem[None], size=out, mode="bilinear", align_corners=False)[0]
        results.append(sem)
    return results


def semantic_inference(
    pred_logits: Tensor,
    pred_masks: Tensor,
    image_sizes: Sequence[Size],
    padded_size: Size,
    output_sizes: Sequence[Size] | None = None,
) -> list[Tensor]:
    """Label maps [H, W] (int64 class indices): argmax over classes of :func:`semantic_probabilities`,
    resized to the output size (:func:`resize_argmax`).

    At the input's size, the class scores of a block of pixels are reduced to labels while they are in the
    cache (:func:`_class_score_blocks`); the [H*W, K] scores are never built."""
    output_sizes = output_sizes or image_sizes
    labels = []
    for i, (size, out) in enumerate(zip(image_sizes, output_sizes)):
        one = slice(i, i + 1)
        if tuple(out) != tuple(size):
            # Class planes when a resize follows (resizing channels-last probabilities copied them twice inside
            # the kernel: 2x slower).
            (probs,) = semantic_probabilities(pred_logits[one], pred_masks[one], [size], padded_size, [size], False)
            labels.append(resize_argmax(probs, tuple(out)))
            continue
        probs, pixels = _query_scores(pred_logits[i], pred_masks[i], padded_size, size)
        label = torch.empty(pixels.shape[1], dtype=torch.int64, device=pixels.device)
        for block, scores in _class_score_blocks(pixels, probs):
            torch.argmax(scores, 1, out=label[block])
        labels.append(label.view(*size))
    return labels


def _resized_masks(masks: Tensor, padded_size: Size, image_size: Size, output_size: Size) -> Iterator[Tensor]:
    """Each of ``masks`` [N, h/4, w/4] upsampled to the padded size, cropped and resized bilinearly to the output
    size (detectron2's sem_seg_postprocess), one at a time: a contiguous float32 [H, W] the caller may change in
    place, and which the next mask overwrites (one buffer at the output size, :func:`_resize_into`).

    One mask at a time, because a mask at a photo's size fits the CPU's cache where N of them do not: the
    thresholds, sigmoid and sums that follow read it from the cache, and no [N, H, W] float tensor is
    allocated (fresh memory of that size costs a page fault every 4 KiB: about as much time as the resize).
    Computed alone, a mask also gets the same values whatever else is computed with it: torch computes the
    elements past a tensor's last whole SIMD vector with its scalar sigmoid, which can differ from the vector
    one in the last bit."""
    resize = tuple(output_size) != tuple(image_size)
    buffer = masks.new_empty((1, 1, *output_size)) if resize else None
    # A float32 resize is yielded as it is; a crop (a strided view) or another dtype is copied into float32.
    copy = None if resize and masks.dtype == torch.float32 else masks.new_empty(tuple(output_size), dtype=torch.float32)
    for crop in _padded_crops(masks, padded_size, image_size):
        mask = _resize_into(crop[None, None], buffer)[0, 0] if resize else crop
        yield mask if copy is None else copy.copy_(mask)


def panoptic_inference(
    pred_logits: Tensor,
    pred_masks: Tensor,
    image_sizes: Sequence[Size],
    padded_size: Size,
    output_sizes: Sequence[Size] | None = None,
    thing_classes: Sequence[int] | None = None,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> list[PanopticResult]:
    """The paper's general inference.

    Queries predicting no-object or scoring at most ``object_mask_threshold`` are dropped; each pixel goes
    to argmax_i p_i(c_i) * m_i; a segment whose won area is below ``overlap_threshold`` of its own
    m_i >= 0.5 area is dropped (its pixels stay void, id 0); segments of one stuff class are merged.
    ``thing_classes=None`` means the metadata is unknown and every class is treated as a thing. Masks are
    resized to the output size one at a time (:func:`_resized_masks`); a later query wins a pixel only with a
    strictly higher value, which is argmax's first-wins rule (for finite masks: a NaN wins no pixel).
    """
    output_sizes = output_sizes or image_sizes
    num_classes = pred_logits.shape[-1] - 1
    things = None if thing_classes is None else set(int(c) for c in thing_classes)
    results = []
    for logits, masks, size, out in zip(pred_logits, pred_masks, image_sizes, output_sizes):
        scores, labels = logits.float().softmax(-1).max(-1)
        keep = (labels != num_classes) & (scores > object_mask_threshold)
        segmentation = torch.zeros(tuple(out), dtype=torch.int32, device=logits.device)
        if not keep.any():
            results.append(PanopticResult(segmentation, []))
            continue
        cur_scores, cur_classes = scores[keep], labels[keep]
        best = None
        winner = torch.zeros(tuple(out), dtype=_index_type(len(cur_scores)), device=logits.device)
        # The comparisons' results go to reused planes: a fresh one per mask is mapped anew and page-faulted in
        # (glibc maps an allocation again when it is as large as the last one freed). As float, then bool where
        # masked_fill_ needs it (_count_ones).
        compared = torch.empty(tuple(out), device=logits.device)
        better = torch.empty(tuple(out), dtype=torch.bool, device=logits.device)
        own_area = []
        for k, (mask, score) in enumerate(zip(_resized_masks(masks[keep], padded_size, size, out), cur_scores)):
            mask.sigmoid_()
            own_area.append(_count_ones(torch.ge(mask, 0.5, out=compared)))
            weighted = mask.mul_(score)
            if best is None:  # the first mask starts the running maximum (the next one overwrites its memory)
                best = weighted.clone()
                continue
            better.copy_(torch.gt(weighted, best, out=compared))
            torch.maximum(best, weighted, out=best)
            winner.masked_fill_(better, k)
        winner = winner.long()
        own_area = torch.stack(own_area).tolist()
        won_area = torch.bincount(winner.flatten(), minlength=len(cur_scores)).tolist()
        # Decide every query on small per-query numbers, then paint all pixels with one lookup.
        lut = [0] * len(cur_scores)
        segments: list[dict] = []
        stuff_segment: dict[int, dict] = {}
        for k, (cls, score) in enumerate(zip(cur_classes.tolist(), cur_scores.tolist())):
            if won_area[k] == 0 or own_area[k] == 0 or won_area[k] / own_area[k] < overlap_threshold:
                continue
            isthing = things is None or cls in things
            if not isthing and cls in stuff_segment:
                seg = stuff_segment[cls]
                seg["area"] += won_area[k]
                seg["score"] = max(seg["score"], score)
                lut[k] = seg["id"]
                continue
            seg = {"id": len(segments) + 1, "category_id": cls, "isthing": isthing, "score": score, "area": won_area[k]}
            segments.append(seg)
            if not isthing:
                stuff_segment[cls] = seg
            lut[k] = seg["id"]
        segmentation = torch.tensor(lut, dtype=torch.int32, device=logits.device)[winner]
        results.append(PanopticResult(segmentation, segments))
    return results


def instance_inference(
    pred_logits: Tensor,
    pred_masks: Tensor,
    image_sizes: Sequence[Size],
    padded_size: Size,
    output_sizes: Sequence[Size] | None = None,
    topk: int = 100,
    thing_classes: Sequence[int] | None = None,
) -> list[InstanceResult]:
    """Mask2Former's instance inference: top-k over queries x classes; binary mask at 0.5; score = class
    probability x mean mask probability inside the binary mask. ``thing_classes`` restricts to things.
    Float masks are built one at a time (:func:`_resized_masks`; the binary masks of the result are the
    output)."""
    output_sizes = output_sizes or image_sizes
    results = []
    for logits, masks, size, out in zip(pred_logits, pred_masks, image_sizes, output_sizes):
        num_queries, num_classes = logits.shape[0], logits.shape[1] - 1
        probs = logits.float().softmax(-1)[:, :-1]
        if thing_classes is not None:
            allowed = torch.zeros(num_classes, dtype=torch.bool, device=probs.device)
            allowed[list(thing_classes)] = True
            probs = probs.masked_fill(~allowed, -1.0)
        k = min(topk, num_queries * num_classes)
        top_scores, flat = probs.flatten().topk(k)
        valid = top_scores >= 0
        top_scores, flat = top_scores[valid], flat[valid]
        labels, queries = flat % num_classes, flat // num_classes
        # A query often makes several of the top k (with several classes): resize each mask once, into the
        # first planes of the result, which are then put in score order in place (:func:`_gather_planes`).
        unique, inverse = queries.unique(return_inverse=True)
        planes = torch.empty((len(queries), *out), dtype=torch.bool, device=masks.device)
        inside, area = [], []
        weights = None  # each binary mask in turn as 1.0 / 0.0 (a fresh one per mask page-faulted: 30 ms at 12 MP)
        for binary, m in zip(planes[: len(unique)], _resized_masks(masks[unique], padded_size, size, out)):
            # The comparison written as float and the bool mask copied from it (_count_ones).
            weights = torch.empty_like(m) if weights is None else weights
            torch.gt(m, 0, out=weights)
            binary.copy_(weights)
            area.append(_count_ones(weights))
            # The sum of the mask's probabilities inside its binary mask, as sum(p * binary) adds them; multiplying
            # by the float mask: by the bool tensor itself was 2x slower, a masked_fill_ 3x (640 x 480).
            inside.append(m.sigmoid_().mul_(weights).sum())
        score_unique = torch.stack(inside) / (torch.stack(area).float() + 1e-6) if area else masks.new_zeros(0)
        final = top_scores * score_unique[inverse]
        order = final.argsort(descending=True)
        results.append(InstanceResult(_gather_planes(planes, inverse[order].tolist()), labels[order], final[order]))
    return results


def _gather_planes(planes: Tensor, source: list[int]) -> Tensor:
    """``planes`` [M, ...] rearranged in place so that plane j holds what plane ``source[j]`` held, as
    ``planes[source]`` gives (``source``: M indices, each below M); returns ``planes``.

    In place because the planes are the result's masks at the output size: at 12 MP, 100 of them are 1.2 GB,
    which a gather would allocate and page-fault in a second time. Each source plane is copied once to the
    first place that takes it (a chain of moves ending where nothing is held, or a cycle through one spare
    plane), then into any further places that take it."""
    first: dict[int, int] = {}
    for j, u in enumerate(source):
        first.setdefault(u, j)
    pending = {u: j for u, j in first.items() if u != j}  # planes whose content still has to move
    spare = None
    while pending:
        start = next(iter(pending))
        chain = [start]  # each element's content moves to the next one
        while chain[-1] in pending and pending[chain[-1]] != start:
            chain.append(pending[chain[-1]])
        if chain[-1] in pending:  # a cycle: the last content goes round to the start through the spare plane
            spare = torch.empty_like(planes[0]) if spare is None else spare
            spare.copy_(planes[chain[-1]])
            for src, dst in zip(reversed(chain[:-1]), reversed(chain[1:])):
                planes[dst].copy_(planes[src])
            planes[start].copy_(spare)
        else:  # ends where nothing still needed is held: move from the end back
            for src, dst in zip(reversed(chain[:-1]), reversed(chain[1:])):
                planes[dst].copy_(planes[src])
        for u in chain:
            pending.pop(u, None)
    for j, u in enumerate(source):
        if first[u] != j:
            planes[j].copy_(planes[first[u]])
    return planes


def postprocess(
    task: str,
    pred_logits: Tensor,
    pred_masks: Tensor,
    image_sizes: Sequence[Size],
    padded_size: Size,
    output_sizes: Sequence[Size],
    config: InferenceConfig,
    thing_classes: Sequence[int] | None = None,
) -> list[Tensor] | list[PanopticResult] | list[InstanceResult]:
    """The one entry from model outputs to results for ``task`` (semantic, panoptic or instance), used by
    ``MaskFormer.predict``, validation, evaluation and the Predictor so that they cannot disagree.

    ``thing_classes`` decide panoptic stuff merging (None: unknown, every class is a thing) and restrict
    instance results to things (None or empty: every class). No float tensor of more than a few masks or
    class planes at the output size is built, except semantic probabilities of all classes when the output is
    the network's input size.
    """
    if task == "semantic":
        return semantic_inference(pred_logits, pred_masks, image_sizes, padded_size, output_sizes)
    if task == "panoptic":
        return panoptic_inference(
            pred_logits,
            pred_masks,
            image_sizes,
            padded_size,
            output_sizes,
            thing_classes=thing_classes,
            object_mask_threshold=config.object_mask_threshold,
            overlap_threshold=config.overlap_threshold,
        )
    if task == "instance":
        return instance_inference(
            pred_logits, pred_masks, image_sizes, padded_size, output_sizes, topk=config.instance_topk,
            thing_classes=thing_classes or None,
        )  # fmt: skip
    raise ValueError(f"unknown task {task!r} (expected semantic, panoptic or instance)")
