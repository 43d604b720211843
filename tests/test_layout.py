"""The training step's memory layout: timed on this machine where the config leaves it open, kept by a resumed
run, and an optimiser state that follows its parameters' layout when a checkpoint is loaded."""

from __future__ import annotations

import copy
import io
import logging

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from maskformer.data.synth import write_dataset
from maskformer.model import MaskFormer, Segmenter, SetCriterion
from maskformer.training import TrainConfig, train
from maskformer.training import layout as layout_module
from maskformer.training.layout import LayoutTiming, time_training_layouts
from maskformer.training.optim import build_optimizer
from tests.helpers import run_config, tiny_config


def _spatial_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)


def test_the_choice_is_the_faster_layout_and_a_tie_keeps_nchw():
    assert LayoutTiming(channels_last_s=1.0, nchw_s=2.0).channels_last
    assert not LayoutTiming(channels_last_s=2.0, nchw_s=1.0).channels_last
    assert not LayoutTiming(channels_last_s=1.0, nchw_s=1.0).channels_last
    line = LayoutTiming(channels_last_s=6.56, nchw_s=5.52).describe()
    assert "6.56 s channels-last" in line and "5.52 s in NCHW" in line and "training in NCHW" in line


def test_timing_leaves_the_network_and_the_random_state_alone(tmp_path):
    """The steps run on a copy: weights, BatchNorm statistics, layout and the global generator as they were."""
    config = run_config(tmp_path, 1)
    model = Segmenter.from_config(config.model).train()
    criterion = SetCriterion.from_config(config.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strides = [p.stride() for p in model.parameters()]
    rng = torch.get_rng_state()
    timing = time_training_layouts(model, criterion, 2, (48, 48))
    assert 0 < timing.channels_last_s < float("inf") and 0 < timing.nchw_s < float("inf")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.stride() for p in model.parameters()] == strides and model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())


class LayoutSeen(Callback):
    """Records whether the network trained channels-last."""

    def on_train_start(self, trainer, module) -> None:
        self.channels_last = _spatial_conv(module.model).weight.is_contiguous(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth"), 6, 2, seed=1, size_range=(48, 64))


def test_an_open_layout_is_timed_and_a_resumed_run_keeps_its_own(synth, tmp_path, monkeypatch, caplog):
    """train.channels_last=None: the run trains in the layout timed faster and says so; resumed, it keeps the
    layout its checkpoint was trained in, whatever a new timing would say; a deterministic or short run times
    nothing."""

    def untimed(*args, **kwargs):
        raise AssertionError("the run timed the layouts")

    # A run shorter than MIN_MEASURED_STEPS times nothing: the network's own rule.
    monkeypatch.setattr(layout_module, "time_training_layouts", untimed)
    seen = LayoutSeen()
    train(run_config(synth, 2, channels_last=None), tmp_path / "short", callbacks=[seen])
    assert seen.channels_last  # the network's own rule: channels-last for a ResNet with a DETR decoder

    # These runs stand for long ones: each step of a real one would cost the test time.
    monkeypatch.setattr(layout_module, "MIN_MEASURED_STEPS", 1)
    timings = iter([LayoutTiming(channels_last_s=2.0, nchw_s=1.0), LayoutTiming(channels_last_s=1.0, nchw_s=2.0)])
    monkeypatch.setattr(layout_module, "time_training_layouts", lambda *args, **kwargs: next(timings))
    with caplog.at_level(logging.INFO, logger="maskformer"):
        train(run_config(synth, 2, channels_last=None), tmp_path / "run", callbacks=[seen])
    assert not seen.channels_last and "2.00 s channels-last and 1.00 s in NCHW" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="maskformer"):
        train(run_config(synth, 3, channels_last=None), tmp_path / "run", resume="auto", callbacks=[seen])
    assert not seen.channels_last and "memory layout: NCHW, as the run trained before its checkpoint" in caplog.text
    assert next(timings).channels_last  # the resumed run did not time the layouts

    monkeypatch.setattr(layout_module, "time_training_layouts", untimed)
    train(run_config(synth, 1, channels_last=None, deterministic=True), tmp_path / "det", callbacks=[seen])
    assert seen.channels_last


def test_a_loaded_optimizer_state_takes_its_parameters_layout():
    """Moments saved channels-last and loaded by a run in NCHW: the fused update must pair each moment with its
    own weight. Every parameter gets the same gradient values in both runs, so they must end equal up to the
    rounding of the update (a step moves a weight by at most about lr = 0.1; float32 rounding of weights of
    order 1 is 1e-7; pairing moments with the wrong elements moved weights by 0.1)."""
    cfg = TrainConfig(lr=0.1, max_steps=10, backbone_lr_multiplier=1.0)
    g = torch.Generator().manual_seed(0)
    model = MaskFormer(tiny_config()).to(memory_format=torch.channels_last)
    grads = [torch.randn(p.shape, generator=g) for p in model.parameters()]

    def step(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        for p, grad in zip(net.parameters(), grads):
            p.grad = torch.empty_like(p).copy_(grad)  # in the parameter's layout, as backward makes it
        optimizer.step()

    optimizer, _ = build_optimizer(model, cfg)
    for _ in range(2):
        step(model, optimizer)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)  # strides kept, as in a checkpoint
    resumed = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    assert _spatial_conv(resumed).weight.is_contiguous()
    resumed_optimizer, _ = build_optimizer(resumed, cfg)
    buffer.seek(0)
    resumed_optimizer.load_state_dict(torch.load(buffer, weights_only=True))
    step(model, optimizer)
    step(resumed, resumed_optimizer)
    for a, b in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(a.detach().contiguous(), b.detach(), rtol=0, atol=1e-5)
