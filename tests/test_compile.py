"""torch.compile (inductor on the CPU) as predict, serve, eval and train take it (``--compile``): the network is
really compiled, gives eager's outputs to float rounding, and the default path stays eager. The compiled
tests use a small EoMT, the family that compiles fastest (about 15 s a forward, 50 s a training step cold)."""

from __future__ import annotations

import json

import pytest
import torch

from maskformer.cli.main import main
from maskformer.data.synth import write_dataset
from maskformer.model import Segmenter
from maskformer.predict import Predictor
from maskformer.training import train
from tests.helpers import run_config, small_config

# The bound for compiled against eager outputs. Inductor's fused kernels reorder float32 sums: a few
# float32 ulps per sum of a few dozen O(1) terms, 1e-6 at most here (measured: 9e-7 on mask logits of size 2).
TOLERANCE = 1e-4


def _traced_by_compiler(model: torch.nn.Module) -> list[bool]:
    """A list that gets True each time ``model``'s forward runs inside torch.compile's tracing."""
    seen: list[bool] = []
    model.register_forward_hook(lambda *_: seen.append(torch.compiler.is_compiling()))
    return seen


def _finished_eomt() -> Segmenter:
    """A small random EoMT of the synthetic data's 6 classes, its masks annealed away (inference unmasked), in
    eval mode."""
    torch.manual_seed(0)
    model = Segmenter.from_config(small_config("eomt", num_classes=6, width=32, queries=8, layers=2)).eval()
    model.attn_mask_probs.zero_()
    return model


def test_a_compiled_predictor_gives_eager_outputs_and_leaves_the_default_eager():
    model = _finished_eomt()
    eager, compiled = Predictor(model), Predictor(model, compile=True)
    eager_calls, compiled_calls = _traced_by_compiler(eager.model), _traced_by_compiler(compiled.model)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        want, got = eager.model(x), compiled.model(x)
    assert compiled_calls == [True] and eager_calls == [False]
    assert (got.logits - want.logits).abs().max() <= TOLERANCE
    assert (got.masks - want.masks).abs().max() <= TOLERANCE
    # The bf16 copy is compiled too (a deep copy of a compiled module runs eagerly): the hook, copied with the
    # model, sees the copy's forward traced.
    compiled.precision = "bf16"
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    assert compiled(image, task="panoptic")[0].segmentation.shape == (50, 70)
    assert compiled_calls == [True, True]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    # Images of one size: validation compiles one shape (each new size costs a compile of ~13 s here).
    return write_dataset(tmp_path_factory.mktemp("synth"), 8, 2, seed=3, size_range=(64, 64))


def test_a_compiled_training_run_follows_the_eager_one(synth, tmp_path):
    """Two steps with train.compile give the eager run's losses to float rounding (the compiled model also
    validates), and the run's model loads strictly: compiling in place kept the parameters' names. The masks
    stay on for both steps: inductor draws random numbers its own way, so a masking probability between 0 and
    1 (a random draw in the network) would change the criterion's sampled points after it."""
    losses = {}
    for compiled in (False, True):
        run = tmp_path / f"run-{compiled}"
        config = run_config(synth, 2, "eomt", compile=compiled)
        config.model.eomt.anneal_start, config.model.eomt.anneal_end = (10, 10), (20, 20)
        train(config, run)
        history = json.loads((run / "history.json").read_text())
        losses[compiled] = [h["loss"] for h in history if "loss" in h]
    assert len(losses[True]) == 2
    for a, b in zip(losses[True], losses[False]):
        assert abs(a - b) <= TOLERANCE * abs(b)
    Segmenter.from_pretrained(tmp_path / "run-True" / "model", strict=True)


def test_every_command_passes_compile_to_the_network(synth, tmp_path, monkeypatch):
    """``--compile`` reaches the network in predict, serve, eval and train, and nothing compiles without it
    (``Module.compile`` recorded instead of run: the compiled path itself is the tests above)."""
    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    uvicorn = pytest.importorskip("uvicorn")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    folder = tmp_path / "model"
    _finished_eomt().save_pretrained(folder)
    image = next((synth / "images" / "val").glob("*.png"))
    commands = {
        "predict": ["predict", str(image), "--model", str(folder), "--out", str(tmp_path / "pred"), "--quiet"],
        "serve": ["serve", "--model", str(folder)],
        "eval": ["eval", "--model", str(folder), "--data", str(synth), "--max-images", "1"],
        "train": ["train", "--config", str(tmp_path / "run.yaml"), "--data", str(synth)],
    }
    run_config(synth, 1, "eomt").to_yaml(tmp_path / "run.yaml")
    for name, argv in commands.items():
        for flag in ([], ["--compile"]):
            compiled.clear()
            out = ["--out", str(tmp_path / f"run{len(flag)}")] if name == "train" else []
            assert main([*argv, *out, *flag]) == 0, name
            assert compiled == (["EoMT"] if flag else []), name
