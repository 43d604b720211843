"""Multi-scale deformable attention's core against the official pure-PyTorch formulation
(``ms_deform_attn_core_pytorch``: one grid_sample per level), values and gradients (float64, float32 and
bfloat16 inputs; some without gradients), points inside and outside the maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskformer.model.msdeformattn import deformable_sample


def official_core(value, shapes, locations, weights):
    """The official repository's ms_deform_attn_core_pytorch, restated: value [B, S, M, D]."""
    b, _, m, d = value.shape
    _, q, _, num_levels, p, _ = locations.shape
    levels = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for level, (h, w) in enumerate(shapes):
        v = levels[level].flatten(2).transpose(1, 2).reshape(b * m, d, h, w)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    attn = weights.transpose(1, 2).reshape(b * m, 1, q, num_levels * p)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * attn).sum(-1).view(b, m * d, q)
    return out.transpose(1, 2)


def _inputs(dtype):
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (6, 10), (12, 20)]
    b, m, d, p, q = 2, 4, 8, 4, 30
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, m, d, generator=gen, dtype=dtype)
    # Points up to 20% outside the maps on every side: zero padding matters.
    locations = torch.rand(b, q, m, len(shapes), p, 2, generator=gen, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(b, q, m, len(shapes), p, generator=gen, dtype=dtype).softmax(-1)
    return value, shapes, locations, weights


def test_equals_the_official_formulation_with_gradients():
    value, shapes, locations, weights = _inputs(torch.float64)
    grads = []
    for fn in (deformable_sample, official_core):
        args = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
        out = fn(args[0], shapes, args[1], args[2])
        out.backward(torch.ones_like(out).cumsum(-1))
        grads.append((out.detach(), *(a.grad for a in args)))
    for mine, theirs in zip(*grads):
        assert torch.allclose(mine, theirs, atol=1e-12), (mine - theirs).abs().max()


def test_float32_close_and_bfloat16_runs():
    value, shapes, locations, weights = _inputs(torch.float32)
    assert torch.allclose(
        deformable_sample(value, shapes, locations, weights),
        official_core(value, shapes, locations, weights),
        atol=1e-5,
    )
    low = deformable_sample(value.bfloat16(), shapes, locations.bfloat16(), weights.bfloat16())
    assert low.dtype == torch.bfloat16


def test_bfloat16_gradients_and_inputs_without_gradients():
    """The backward computes in float32 and returns each input's own dtype; inputs that need no gradient get
    none, and the forward with autograd is the forward without it, bit for bit."""
    value, shapes, locations, weights = _inputs(torch.float32)
    with torch.no_grad():
        plain = deformable_sample(value, shapes, locations, weights)
    value = value.clone().requires_grad_(True)
    out = deformable_sample(value, shapes, locations, weights)
    assert torch.equal(out.detach(), plain)
    out.sum().backward()
    reference = value.detach().clone().requires_grad_(True)
    official_core(reference, shapes, locations, weights).sum().backward()
    assert torch.allclose(value.grad, reference.grad, atol=1e-5)
    low = [t.bfloat16().requires_grad_(True) for t in (value.detach(), locations, weights)]
    deformable_sample(low[0], shapes, low[1], low[2]).float().sum().backward()
    assert all(t.grad.dtype == torch.bfloat16 and t.grad.isfinite().all() for t in low)


def test_points_far_outside_the_maps_sample_zero_with_either_index_type(monkeypatch):
    """Points so far out that their pixel coordinates overflow int32 (a diverging model's offsets) sample zero,
    as the official formulation does, with the int32 row indices of the default path and with the int64 ones of
    an exported graph."""
    value, shapes, locations, weights = _inputs(torch.float64)
    far = torch.tensor([3e9, -3e9, 1e12, -1e12], dtype=torch.float64)
    locations = locations.clone()
    for axis, queries in ((0, slice(0, None, 3)), (1, slice(1, None, 3))):  # x of some queries, y of others
        points = locations[:, queries, ..., axis]
        points.copy_(far[torch.arange(points.numel()) % len(far)].view_as(points))
    expected = official_core(value, shapes, locations, weights)
    assert torch.allclose(deformable_sample(value, shapes, locations, weights), expected, atol=1e-12)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)  # the int64 indices of an exported graph
    assert torch.allclose(deformable_sample(value, shapes, locations, weights), expected, atol=1e-12)
