"""Speed and memory of this package's MaskFormer, Mask2Former and EoMT against transformers' with equal weights,
end to end on photos (the Predictor against transformers' image processor + model + post-processing), and
against the machine's own ceiling (the fastest of several large matrix products and convolutions). Runs on
CUDA when present, else on the CPU.

    python benchmarks/bench.py                 # full run (make bench); table on stdout, JSON in benchmarks/
    python benchmarks/bench.py --quick         # fewer repeats, batch-8 forward skipped
    python benchmarks/bench.py --models m2f_r50 --skip-e2e   # one model only

Models: swin_t, r50 (MaskFormer), m2f_swin_t, m2f_r50 (Mask2Former) at 512 and eomt_s, eomt_l (EoMT, ViT-S
and ViT-L, masks annealed away) at 640, random weights, 150 classes.

Every timing is the median of ``--repeats`` runs after one warm-up run; forwards, post-processing and the photos
run ours and transformers' in turns, so that a drift of the machine's speed reaches both sides alike (training
steps, each side's optimiser state too large to hold both, run one side after the other). Ratios are
transformers' time divided by ours (above 1: we are faster). Peak memory is measured for each case alone in a new
process, as the growth of the peak process RSS (CPU) or of the peak allocated memory (CUDA) over what the process
held after building the models.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from maskformer.model import MaskFormer, Segmenter, SetCriterion
from maskformer.model import inference as post
from maskformer.model.padding import pad_batch, padded_groups
from maskformer.model.test_resize import resize_for_test
from maskformer.precision import Bf16Speed, bf16_speed
from maskformer.training.layout import synthetic_batch, time_training_layouts

NUM_CLASSES = 150


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def paired_median_times(fns: Sequence[Callable[[], object]], device: torch.device, repeats: int) -> list[float]:
    """The median time of each of ``fns`` over ``repeats`` rounds, each round running every one in turn (after one
    warm-up run of each): a drift of the machine's speed reaches all of them alike."""
    for fn in fns:
        fn()
        sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            sync(device)
            spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The median time of ``fn`` over ``repeats`` runs after one warm-up run."""
    return paired_median_times([fn], device, repeats)[0]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ceiling(dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """GFLOP/s of the fastest of several kernels: large square matrix products and a 3x3 convolution in
    channels-last (oneDNN's convolutions outrun a plain matrix product on some CPUs). A peak, so the best
    run of each counts (a median let a busy moment lower the ceiling below what the models reach)."""
    sizes = (4096, 8192) if device.type == "cuda" else (1536, 2048, 3072)
    best = 0.0

    def timed(fn: Callable[[], object], flops: float) -> None:
        nonlocal best
        fn()
        for _ in range(max(repeats, 5)):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best = max(best, flops / (time.perf_counter() - start) / 1e9)

    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        timed(lambda a=a, b=b: a @ b, 2 * n**3)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device, dtype, memory_format=torch.channels_last)
    x = torch.randn(8, 256, 64, 64, device=device).to(dtype, memory_format=torch.channels_last)
    with torch.no_grad():
        timed(lambda: conv(x), 2 * 256 * 256 * 9 * 64 * 64 * 8)
    return best


def family(name: str) -> str:
    """The family of a benchmark model's name: m2f_* Mask2Former, eomt_* EoMT, else MaskFormer."""
    return "mask2former" if name.startswith("m2f_") else "eomt" if name.startswith("eomt_") else "maskformer"


# EoMT's benchmark models: DINOv2-with-registers ViT-S (its official small config: queries in the last 3 blocks)
# and ViT-L (4 blocks), 200 queries, at 640.
EOMT_VITS = {"eomt_s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, num_blocks=3),
             "eomt_l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, num_blocks=4)}  # fmt: skip
EOMT_SIZE = 640


def _build_eomt(name: str):
    """A random transformers EoMT whose masks are annealed away (a finished model: inference unmasked)."""
    import transformers

    config = transformers.EomtConfig(**EOMT_VITS[name], num_labels=NUM_CLASSES, image_size=EOMT_SIZE, num_queries=200)
    theirs = transformers.EomtForUniversalSegmentation(config)
    with torch.no_grad():
        theirs.attn_mask_probs.zero_()
    return theirs


def build_pair(name: str, device: torch.device):
    """A random transformers model (MaskFormer, or Mask2Former for names m2f_*) and this package's model
    loaded from its saved weights."""
    import transformers

    torch.manual_seed(0)
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if name.removeprefix("m2f_") == "swin_t":
        backbone = transformers.SwinConfig(
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, out_features=stages
        )
    else:
        backbone = transformers.ResNetConfig(
            depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck", out_features=stages
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family(name) == "eomt":
            theirs = _build_eomt(name)
        elif family(name) == "mask2former":
            config = transformers.Mask2FormerConfig(backbone_config=backbone, num_labels=NUM_CLASSES)
            theirs = transformers.Mask2FormerForUniversalSegmentation(config)
        else:
            config = transformers.MaskFormerConfig(
                backbone_config=backbone, num_labels=NUM_CLASSES, use_auxiliary_loss=False
            )
            theirs = transformers.MaskFormerForInstanceSegmentation(config)
    with tempfile.TemporaryDirectory() as folder:
        theirs.save_pretrained(folder)
        ours = Segmenter.from_pretrained(folder, strict=True)
    return ours.to(device).eval(), theirs.to(device).eval()


def training_targets(batch: int, size: int, device: torch.device) -> list[dict]:
    """The targets of a timed training step: the package's synthetic ones (square segments of random classes,
    as `train` times its layouts on), masks as floats, which transformers' loss takes."""
    _, targets = synthetic_batch(batch, (size, size), NUM_CLASSES, device)
    return [{"labels": t["labels"], "masks": t["masks"].float()} for t in targets]


def bench_model(name: str, size: int, repeats: int, quick: bool, device: torch.device, ceilings: dict) -> dict:
    r = time_model(name, size, repeats, quick, device, ceilings)
    release_memory()  # the models are gone: the probes' processes get the memory (ViT-L's need 10 GiB)
    probes = MEMORY_PROBES if not quick else ("eval_b1", "train_b2")
    if family(name) != "maskformer":
        probes = tuple(p for p in probes if p != "train_b2_points")
    # Peak memory, each in a fresh process: the allocator keeps what earlier measurements used.
    for probe in probes:
        for impl in ("ours", "theirs") if probe != "train_b2_points" else ("ours",):
            # Our training in the layout `train` chose above, our inference channels-last (the Predictor's).
            nchw = impl == "ours" and probe.startswith("train") and r["train_layout"] == "NCHW"
            r[f"{impl}_{probe}_mb"] = memory_probe(name, impl, probe, size, nchw)
    return r


def release_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere a
    no-op), so that a probe process started next does not compete with memory this one no longer uses."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU's fused attention kernel, by torch's own formula for its CUDA kernels (2 * L * S * E for
    the scores and again for the weighted values): torch's counter has none for the CPU kernel and counts it as
    0, which left out ViT-S EoMT's attention, 51 of its 136 GFLOPs at 640."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of ``model(x)``, the CPU's fused attention counted (:func:`_cpu_attention_flops`). Counted with
    autograd on: the counter's module tracker needs grad functions (it fails under no_grad)."""
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        model(x)
    return counter.get_total_flops()


def time_model(name: str, size: int, repeats: int, quick: bool, device: torch.device, ceilings: dict) -> dict:
    """The timings of one benchmark model and transformers' against it (forward, post-processing, training)."""
    ours, theirs = build_pair(name, device)
    r: dict = {"model": name, "size": size}
    x1 = torch.randn(1, 3, size, size, device=device)
    r["gflops_forward"] = forward_flops(ours, x1) / 1e9
    with torch.no_grad():
        r["ours_eval_b1_nchw_s"] = median_time(lambda: ours(x1), device, repeats)
    # From here on as the Predictor and training run it: weights and activations channels-last.
    ours.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for batch in (1,) if quick else (1, 8):
            x = torch.randn(batch, 3, size, size, device=device)
            r[f"ours_eval_b{batch}_s"], r[f"theirs_eval_b{batch}_s"] = paired_median_times(
                [lambda x=x: ours(x), lambda x=x: theirs(pixel_values=x)], device, repeats
            )
        r["fp32_fraction_of_ceiling"] = r["gflops_forward"] / r["ours_eval_b1_s"] / ceilings["fp32"]
        if ceilings["bf16"] is not None:  # None: bfloat16 is emulated here (main), its rows would take hours
            # As the Predictor's bf16: a bfloat16 copy of the model (no per-layer autocast casts).
            low, x1_low = copy.deepcopy(ours).to(torch.bfloat16), x1.to(torch.bfloat16)
            r["ours_eval_b1_bf16_s"] = median_time(lambda: low(x1_low), device, repeats)
            r["bf16_fraction_of_ceiling"] = r["gflops_forward"] / r["ours_eval_b1_bf16_s"] / ceilings["bf16"]
        r.update(time_compiled_forward(ours, x1, device, repeats))
        # Post-processing of one 512 x 512 image from the same raw outputs.
        out = ours(x1)
        logits, masks = out.logits, out.masks
        sizes, padded = [(size, size)], (size, size)
        # transformers' EoMT merges semantic windows by the offsets its processor made: here one square window.
        windows = {"patch_offsets": [[0, 0, size]]} if family(name) == "eomt" else {}
        hf_out = theirs(pixel_values=x1, **windows)
        processor = _processor(family(name))
        pairs = {
            "semantic": (
                lambda: post.semantic_inference(logits, masks, sizes, padded),
                lambda: processor.post_process_semantic_segmentation(hf_out, target_sizes=sizes),
            ),
            "panoptic": (
                lambda: post.panoptic_inference(logits, masks, sizes, padded, object_mask_threshold=0.0),
                lambda: processor.post_process_panoptic_segmentation(hf_out, threshold=0.0, target_sizes=sizes),
            ),
            "instance": (
                lambda: post.instance_inference(logits, masks, sizes, padded),
                lambda: processor.post_process_instance_segmentation(hf_out, threshold=0.0, target_sizes=sizes),
            ),
        }
        for task, fns in pairs.items():
            r[f"ours_{task}_s"], r[f"theirs_{task}_s"] = paired_median_times(fns, device, repeats)
    # One training step at batch 2: forward, matching, loss with deep supervision, backward, AdamW. One
    # implementation's optimiser state and gradients at a time (ViT-L's would not fit in 24 GiB together).
    x2 = torch.randn(2, 3, size, size, device=device)
    targets = training_targets(2, size, device)
    r.update(time_our_training(name, ours, x2, targets, device, repeats, bf16=ceilings["bf16"] is not None))
    r.update(time_their_training(theirs, x2, targets, device, repeats))
    return r


def timed_adamw(model: torch.nn.Module) -> torch.optim.AdamW:
    """The optimiser of a timed training step: AdamW's fused kernel on both sides, as each trainer uses by default
    (ours: ``build_optimizer``; transformers' Trainer: "adamw_torch_fused" with torch 2.8 or later)."""
    return torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)


def time_compiled_forward(model: Segmenter, x: torch.Tensor, device: torch.device, repeats: int) -> dict:
    """``--compile``'s forward at batch 1: a copy of ``model`` (channels-last, eval) through torch.compile as
    the Predictor compiles it (``Segmenter.compile``: inductor, static shapes); the first call's seconds (the
    compile), the median of later calls, and the largest difference from the eager model's logits and masks."""
    compiled = copy.deepcopy(model)
    compiled.compile()
    with torch.no_grad():
        sync(device)
        start = time.perf_counter()
        out = compiled(x)
        sync(device)
        compile_s = time.perf_counter() - start
        seconds = median_time(lambda: compiled(x), device, repeats)
        eager = model(x)
        diff = max((out.logits - eager.logits).abs().max().item(), (out.masks - eager.masks).abs().max().item())
    # The next model compiles anew in this process; inductor's on-disk cache stays, so a later run of the same
    # models compiles faster (the compile_s row says how long it took in this run, cache as found).
    torch.compiler.reset()
    return {"ours_eval_b1_compiled_s": seconds, "compile_s": compile_s, "compiled_max_abs_diff": diff}


def time_our_training(name: str, ours, x2, targets, device: torch.device, repeats: int, bf16: bool) -> dict:
    """Seconds of this package's training step in each memory layout, in the layout ``maskformer train`` times
    faster on this machine (``train_layout``, chosen by the package's own timing, ``time_training_layouts``),
    bf16-mixed (if ``bf16``) and (MaskFormer) with the point-sampled loss, these in the chosen layout. The
    optimiser's state and the gradients are freed on return."""
    r = {}
    criterion = SetCriterion.from_config(ours.config).to(device)
    ours.train()
    opt = None

    def our_step():
        opt.zero_grad(set_to_none=True)
        losses = criterion(ours(x2), targets)
        sum(losses.values()).backward()
        opt.step()

    for key, layout in (("cl", torch.channels_last), ("nchw", torch.contiguous_format)):
        ours.to(memory_format=layout)
        opt = timed_adamw(ours)  # state in the parameters' layout, as a run in that layout has it
        r[f"ours_train_b2_{key}_s"] = median_time(our_step, device, repeats)
    size = tuple(x2.shape[-2:])
    # As train.channels_last=None: timed on a CPU, the network's own rule elsewhere (training/layout.py).
    cpu = device.type == "cpu"
    chosen = time_training_layouts(ours, criterion, len(x2), size).channels_last if cpu else ours.trains_channels_last
    r["train_layout"] = "channels-last" if chosen else "NCHW"
    r["ours_train_b2_s"] = r["ours_train_b2_cl_s" if chosen else "ours_train_b2_nchw_s"]
    ours.to(memory_format=torch.channels_last if chosen else torch.contiguous_format)
    opt = timed_adamw(ours)

    def our_step_bf16():
        # What train.precision=bf16-mixed does: the step under autocast (the criterion keeps float32).
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            losses = criterion(ours(x2), targets)
        sum(losses.values()).backward()
        opt.step()

    if bf16:
        r["ours_train_b2_bf16_s"] = median_time(our_step_bf16, device, repeats)
    if family(name) == "maskformer":
        # The point-sampled mask loss (Mask2Former's settings) at the same batch.
        point_config = copy.deepcopy(ours.config)
        point_config.loss.num_points = 12544
        criterion = SetCriterion.from_config(point_config).to(device)
        r["ours_train_b2_points_s"] = median_time(our_step, device, repeats)
    ours.zero_grad(set_to_none=True)
    ours.to(memory_format=torch.channels_last)
    return r


def time_their_training(theirs, x2, targets, device: torch.device, repeats: int) -> dict:
    """Seconds of transformers' training step; its optimiser's state and gradients are freed on return."""
    theirs.train()
    opt = timed_adamw(theirs)
    mask_labels = [t["masks"] for t in targets]
    class_labels = [t["labels"] for t in targets]

    def their_step():
        opt.zero_grad(set_to_none=True)
        their_loss(theirs, x2, mask_labels, class_labels).backward()
        opt.step()

    seconds = median_time(their_step, device, repeats)
    theirs.zero_grad(set_to_none=True)
    return {"theirs_train_b2_s": seconds}


def their_loss(theirs, x, mask_labels, class_labels) -> torch.Tensor:
    """transformers' training loss with deep supervision, as ours."""
    if not type(theirs).__name__.startswith("MaskFormer"):  # Mask2Former, EoMT: every prediction's loss
        return theirs(pixel_values=x, mask_labels=mask_labels, class_labels=class_labels).loss
    # MaskFormer: auxiliary losses need the flag set here and hidden states (see peers.md).
    theirs.config.use_auxiliary_loss = True
    return theirs(pixel_values=x, mask_labels=mask_labels, class_labels=class_labels, output_hidden_states=True).loss


MEMORY_PROBES = ("eval_b1", "eval_b8", "train_b2", "train_b2_points")


def memory_probe(name: str, impl: str, probe: str, size: int, nchw: bool = False) -> float:
    """Peak memory (MiB) of one measurement run alone in a new process after a warm-up run, minus the process's
    memory before it (weights, and in training the optimiser's state, are not counted, in both implementations
    alike); ours channels-last unless ``nchw``."""
    spec = f"{name}:{impl}:{probe}" + (":nchw" if nchw else "")
    cmd = [sys.executable, __file__, "--probe", spec, "--size", str(size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=memory_probe_env()).stdout
    return float(out.strip().splitlines()[-1])


def memory_probe_env() -> dict[str, str]:
    """The environment of a memory probe: glibc's malloc with a fixed mmap threshold (128 KiB, its initial one), so
    that freed blocks above it go back to the system at once and the peak is the computation's. glibc raises the
    threshold by itself as large blocks are freed (up to 32 MiB), after which the same code's batch-1 peak read
    138-191 MiB from run to run, from how its heap happened to fragment (R50 MaskFormer; 99.5-99.9 MiB with the
    fixed threshold, transformers' 102.8-102.9). Other C libraries ignore the variable."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def run_probe(spec: str, size: int) -> None:
    name, impl, probe, *layout = spec.split(":")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ours, theirs = build_pair(name, device)
    ours.to(memory_format=torch.contiguous_format if layout == ["nchw"] else torch.channels_last)
    model = ours if impl == "ours" else theirs
    del ours, theirs
    batch = {"eval_b1": 1, "eval_b8": 8}.get(probe, 2)
    x = torch.randn(batch, 3, size, size, device=device)
    if probe.startswith("eval"):

        def run() -> None:
            with torch.no_grad():
                model(x) if impl == "ours" else model(pixel_values=x)

    else:
        targets = training_targets(batch, size, device)
        model.train()
        opt = timed_adamw(model)
        if impl == "ours":
            if family(name) == "maskformer":
                model.config.loss.num_points = 12544 if probe == "train_b2_points" else 0
            criterion = SetCriterion.from_config(model.config).to(device)

        def run() -> None:
            opt.zero_grad(set_to_none=True)
            if impl == "ours":
                sum(criterion(model(x), targets).values()).backward()
            else:
                their_loss(model, x, [t["masks"] for t in targets], [t["labels"] for t in targets]).backward()
            opt.step()

    # A warm-up run first: the first call's one-time allocations (oneDNN kernels, thread pools, the optimiser's
    # state) are not the step's, and moved the cold figure by 20-40 MiB from run to run of the same code. What
    # the warm-up freed goes back to the system before the base is read: glibc keeps it otherwise, and a run
    # that fits in it shows no growth (Mask2Former R50's eval batch 1 once read 0.004 MiB).
    run()
    release_memory()
    reset_peak(device)
    base = peak_memory_mb(device)
    run()
    print(peak_memory_mb(device) - base)


E2E_SIZES = ((480, 640), (1080, 1920), (3024, 4032))
TASKS = ("semantic", "panoptic", "instance")


# The models of the end-to-end rows: one of each family, transformers' processor set as ours runs (EoMT: square
# windows for semantic, the image padded to its square with black pixels otherwise, as the official evaluation).
E2E_MODELS = ("swin_t", "m2f_swin_t", "eomt_s")


def end_to_end(device: torch.device, repeats: int, models: Sequence[str] = E2E_MODELS) -> list[dict]:
    """One photo (random pixels) through the Predictor against transformers' image processor (set to the
    same test size and pipeline) + model + post-processing with the photo's size as target, the same random
    ADE-150 model on both sides (Swin-T MaskFormer and Mask2Former, ViT-S EoMT); time (median) and peak memory
    (each alone in a new process).

    Both sides are timed in one process, in turns (ours, theirs, ours, ...): this machine's speed drifts by 10-20%
    over minutes, which moved a ratio timed in two processes one after the other as much as the change it was to
    show. A side that the pair cannot hold (killed: out of memory) is timed alone."""
    rows = []
    for name in models:
        for h, w in E2E_SIZES:
            for task in TASKS:
                row = {"model": name, "size": f"{w}x{h}", "task": task}
                try:
                    times = _run_probe_process(f"e2e:{name}:both:{task}:{h}:{w}:{repeats}:time")
                    row["ours_s"], row["theirs_s"] = map(float, times.split())
                except OutOfMemory:
                    for impl in ("ours", "theirs"):
                        row[f"{impl}_s"] = _killed_as_nan(f"e2e:{name}:{impl}:{task}:{h}:{w}:{repeats}:time")
                for impl in ("ours", "theirs"):
                    spec = f"e2e:{name}:{impl}:{task}:{h}:{w}:1:memory"
                    row[f"{impl}_mb"] = _killed_as_nan(spec, memory_probe_env())
                rows.append(row)
    return rows


def _killed_as_nan(spec: str, env: dict[str, str] | None = None) -> float:
    """The probe's figure, or NaN where the probe was killed (out of memory): the row says so, the others go on."""
    try:
        return float(_run_probe_process(spec, env))
    except OutOfMemory:
        return float("nan")


class OutOfMemory(Exception):
    """A probe process was killed by the kernel (SIGKILL: on this machine, out of memory)."""


def _run_probe_process(spec: str, env: dict[str, str] | None = None) -> str:
    cmd = [sys.executable, __file__, "--probe", spec]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode == -signal.SIGKILL:
        raise OutOfMemory(spec)
    done.check_returncode()
    return done.stdout.strip().splitlines()[-1]


def run_e2e_probe(spec: str) -> None:
    """``e2e:MODEL:IMPL:TASK:H:W:REPEATS:time|memory``: print the median seconds or the peak MiB of one photo;
    IMPL ``both`` (time only) prints our median and transformers', timed in turns."""
    _, name, impl, task, h, w, repeats, what = spec.split(":")
    h, w, repeats = int(h), int(w), int(repeats)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ours, theirs = build_pair(name, device)
    image = torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    if impl == "both":
        runs = [_e2e_ours(ours, image, task, device), _e2e_theirs(theirs, ours, name, image, task, device)]
        print(" ".join(f"{t:.6f}" for t in paired_median_times(runs, device, repeats)))
        return
    if impl == "ours":
        theirs.cpu()
        run = _e2e_ours(ours, image, task, device)
    else:
        ours.cpu()
        run = _e2e_theirs(theirs, ours, name, image, task, device)
    if what == "memory":
        run()  # warm-up, as in the model probes
        release_memory()
        reset_peak(device)
        base = peak_memory_mb(device)
        run()
        print(peak_memory_mb(device) - base)
    else:
        print(median_time(run, device, repeats))


def _e2e_ours(ours: Segmenter, image: torch.Tensor, task: str, device: torch.device) -> Callable[[], object]:
    """One photo through the Predictor."""
    from maskformer.predict import Predictor

    predictor = Predictor(ours, device=device)
    return lambda: predictor(image, task=task)


def _e2e_theirs(
    theirs, ours: Segmenter, name: str, image: torch.Tensor, task: str, device: torch.device
) -> Callable[[], object]:
    """One photo through transformers' image processor, set to our model's test size and pipeline, its model and
    its post-processing with the photo's size as target."""
    h, w = image.shape[-2:]
    inference = ours.config.inference
    size = {"shortest_edge": inference.test_shortest_edge, "longest_edge": inference.test_max_size}
    options = {}
    if family(name) == "eomt":  # semantic: the shorter side at the window size, then square windows
        semantic = {"do_split_image": True, "size": {"shortest_edge": inference.semantic_window}}
        options = semantic if task == "semantic" else {"do_pad": True}
    processor = _processor(family(name), **{"size": size, **options})
    pixels = image.permute(1, 2, 0).numpy()
    post_process = getattr(processor, f"post_process_{task}_segmentation")

    def run():
        inputs = processor(images=[pixels], return_tensors="pt").to(device)
        windows = {"patch_offsets": inputs["patch_offsets"]} if inputs.get("patch_offsets") else {}
        with torch.no_grad():
            out = theirs(pixel_values=inputs["pixel_values"], **windows)
        return post_process(out, target_sizes=[(h, w)])

    return run


BATCH_SIZES = ((480, 640), (640, 480), (512, 512), (375, 500), (480, 640), (600, 800), (512, 512), (427, 640))


def batching_cost(device: torch.device, repeats: int) -> dict:
    """Throughput of 8 photos of mixed sizes through the R50 MaskFormer at batch 8 (semantic): one image at a
    time (exact batch invariance, the default), one batch per padded size, and one batch padded to the
    largest image (the old way, which changes results)."""
    ours, theirs = build_pair("r50", device)
    del theirs
    ours.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in BATCH_SIZES]
    out = {}
    for invariant in (True, False):
        ours.config.inference.batch_invariant = invariant
        key = "one_at_a_time_s" if invariant else "by_padded_size_s"
        out[key] = median_time(lambda: ours.predict(images, task="semantic"), device, repeats)
    resized = [ours.normalize(resize_for_test(img.to(device), ours.config.inference)) for img in images]

    def padded_together():
        batch, sizes = pad_batch(resized, ours.config.inference.size_divisibility)
        with torch.no_grad():
            o = ours(batch, with_aux=False)
        return post.semantic_inference(o.logits, o.masks, sizes, tuple(batch.shape[-2:]))

    out["padded_together_s"] = median_time(padded_together, device, repeats)
    out["groups"] = len(padded_groups([tuple(r.shape[-2:]) for r in resized], 32))
    return out


def bf16_agreement(run: Path, device: torch.device, max_images: int = 100) -> dict:
    """Share of pixels whose semantic class is the same in bfloat16 and float32 inference, on the demo
    run's validation images."""
    from maskformer.data.io import read_image
    from maskformer.predict import LoadedImage, Predictor

    images = sorted((run.parent / "data" / "images" / "val").glob("*.png"))[:max_images]
    predictor = Predictor.from_pretrained(run, device=device)
    loaded = [LoadedImage(read_image(p), p.stem, p) for p in images]
    same = total = 0
    fp32 = [r.label_map for _, r in predictor.predict_loaded(loaded)]
    predictor.precision = "bf16"
    for a, (_, b) in zip(fp32, predictor.predict_loaded(loaded)):
        same += int((a == b.label_map).sum())
        total += a.numel()
    return {"images": len(images), "agreement": same / total}


def _demo_step(
    model: MaskFormer, criterion: SetCriterion, opt: torch.optim.Optimizer, batch: list[dict], bf16: bool
) -> None:
    from maskformer.training.module import pad_target

    x, _ = model.preprocess([item["image"] for item in batch])
    targets = [pad_target(item["targets"], tuple(x.shape[-2:]), x.device) for item in batch]
    opt.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        losses = criterion(model(x), targets)
    sum(losses.values()).backward()
    opt.step()


def data_loading(bf16: bool, steps: int = 12) -> dict:
    """Training-step time of the demo configuration (its memory format, and the precision the demo picks:
    ``bf16`` where bfloat16 is faster) with real loading (0 and 1 loader workers) against the same batches
    preloaded as tensors."""
    from maskformer.data.synth import write_dataset
    from maskformer.demo import demo_config
    from maskformer.training.datamodule import MaskFormerDataModule
    from maskformer.training.module import use_channels_last

    out = {}
    with tempfile.TemporaryDirectory() as folder:
        data = write_dataset(Path(folder), 96, 8, seed=0)
        for workers in (0, 1):
            config = demo_config(data, steps, workers=workers, bf16=bf16)
            datamodule = MaskFormerDataModule(config)
            model = MaskFormer(config.model)
            if use_channels_last(config.train, model):
                model.to(memory_format=torch.channels_last)
            bf16 = config.train.precision == "bf16-mixed"
            criterion = SetCriterion.from_config(model.config)
            opt = timed_adamw(model)

            model.train()
            loader = iter(datamodule.train_dataloader())
            _demo_step(model, criterion, opt, next(loader), bf16)
            start = time.perf_counter()
            batches = []
            for _ in range(steps):
                batches.append(next(loader))
                _demo_step(model, criterion, opt, batches[-1], bf16)
            out[f"loader_{workers}_workers_s"] = (time.perf_counter() - start) / steps
            if workers == 0:
                start = time.perf_counter()
                for batch in batches:
                    _demo_step(model, criterion, opt, batch, bf16)
                out["preloaded_s"] = (time.perf_counter() - start) / steps
    return out


def _processor(kind: str, **kwargs):
    from transformers import EomtImageProcessor, Mask2FormerImageProcessor, MaskFormerImageProcessor

    processors = {"mask2former": Mask2FormerImageProcessor, "eomt": EomtImageProcessor}
    return processors.get(kind, MaskFormerImageProcessor)(**kwargs)


ROWS = [
    ("eval forward, batch 1 (s)", "eval_b1_s"),
    ("eval forward, batch 8 (s)", "eval_b8_s"),
    ("semantic post-processing (s)", "semantic_s"),
    ("panoptic post-processing (s)", "panoptic_s"),
    ("instance post-processing (s)", "instance_s"),
    ("training step, batch 2 (s)", "train_b2_s"),
    ("peak memory, eval batch 1 (MiB)", "eval_b1_mb"),
    ("peak memory, eval batch 8 (MiB)", "eval_b8_mb"),
    ("peak memory, training step (MiB)", "train_b2_mb"),
]


def table(results: dict) -> str:
    speed = Bf16Speed(results["bf16_speedup"])
    bf16_ceiling = (
        f"bfloat16 {results['ceiling_bf16']:.0f} GFLOP/s"
        if results["ceiling_bf16"] is not None
        else f"bfloat16 not measured ({speed.describe()}; no bf16 rows)"
    )
    lines = [
        f"device: {results['device']}; threads: {results['threads']}; torch {results['torch']}",
        f"ceiling (best of matrix products and a convolution): float32 {results['ceiling_fp32']:.0f} GFLOP/s, "
        + bf16_ceiling,
        "",
        "| model | measurement | maskformer | transformers | ratio (theirs / ours) |",
        "|---|---|---|---|---|",
    ]
    for r in results["models"]:
        for label, key in ROWS:
            if key == "train_b2_s" and "train_layout" in r:
                label = f"training step, batch 2, {r['train_layout']} as timed by `train` here (s)"
            if f"ours_{key}" in r and f"theirs_{key}" in r:
                ours, theirs = r[f"ours_{key}"], r[f"theirs_{key}"]
                lines.append(f"| {r['model']} | {label} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f} |")
        # Results before the training layout was timed (train_layout) had the channels-last step as the main row.
        layouts = (("eval forward, batch 1, NCHW (s)", "ours_eval_b1_nchw_s", "theirs_eval_b1_s"),)
        if "train_layout" in r:
            layouts += (("training step, channels-last (s)", "ours_train_b2_cl_s", "theirs_train_b2_s"),)
        layouts += (("training step, NCHW (s)", "ours_train_b2_nchw_s", "theirs_train_b2_s"),)
        for label, our_key, their_key in layouts:
            ours, theirs = r[our_key], r[their_key]
            lines.append(f"| {r['model']} | {label} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f} |")
        lines.append(f"| {r['model']} | forward GFLOPs (batch 1) | {r['gflops_forward']:.1f} | | |")
        lines.append(
            f"| {r['model']} | float32 forward, fraction of ceiling | {r['fp32_fraction_of_ceiling']:.0%} | "
            f"{r['gflops_forward'] / r['theirs_eval_b1_s'] / results['ceiling_fp32']:.0%} | |"
        )
        if "ours_eval_b1_compiled_s" in r:
            lines.append(
                f"| {r['model']} | eval forward, batch 1, `--compile` (s; compiled in {r['compile_s']:.0f} s, "
                f"outputs within {r['compiled_max_abs_diff']:.0e} of eager) | {r['ours_eval_b1_compiled_s']:.3f} | "
                f"{r['theirs_eval_b1_s']:.3f} | {r['theirs_eval_b1_s'] / r['ours_eval_b1_compiled_s']:.2f} |"
            )
        if "ours_eval_b1_bf16_s" in r:
            lines.append(
                f"| {r['model']} | bfloat16 forward batch 1 (s), fraction of bf16 ceiling | "
                f"{r['ours_eval_b1_bf16_s']:.3f} ({r['bf16_fraction_of_ceiling']:.0%}) | | "
                f"{r['theirs_eval_b1_s'] / r['ours_eval_b1_bf16_s']:.2f} |"
            )
            lines.append(
                f"| {r['model']} | training step, batch 2, bf16-mixed (s) | {r['ours_train_b2_bf16_s']:.3f} | | "
                f"{r['theirs_train_b2_s'] / r['ours_train_b2_bf16_s']:.2f} |"
            )
        if "ours_train_b2_points_s" in r:
            lines.append(
                f"| {r['model']} | training step with point-sampled loss (s / MiB) | "
                f"{r['ours_train_b2_points_s']:.3f} / {r.get('ours_train_b2_points_mb', float('nan')):.0f} | | "
                f"memory {r.get('ours_train_b2_points_mb', float('nan')) / r['ours_train_b2_mb']:.2f} x full loss |"
            )
    if "end_to_end" in results:
        lines += [
            "",
            "End to end, one photo, ADE-150 models (Swin-T MaskFormer and Mask2Former, ViT-S EoMT): the Predictor "
            "against transformers' image processor + model + post-processing",
            "",
            "| model | photo | task | maskformer (s / MiB) | transformers (s / MiB) | time ratio | memory ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in results["end_to_end"]:
            cells = [f"{e[f'{impl}_s']:.2f} / {e[f'{impl}_mb']:.0f}" for impl in ("ours", "theirs")]
            ratios = [f"{e['theirs_s'] / e['ours_s']:.2f}", f"{e['theirs_mb'] / max(e['ours_mb'], 1):.2f}"]
            if math.isnan(e["ours_s"]) or math.isnan(e["theirs_s"]):  # a probe killed: out of memory
                killed = [math.isnan(e["ours_s"]), math.isnan(e["theirs_s"])]
                cells = ["killed (out of memory)" if k else c for k, c in zip(killed, cells)]
                ratios = ["", ""]
            lines.append(f"| {e.get('model', 'swin_t')} | {e['size']} | {e['task']} | {' | '.join(cells + ratios)} |")
    if "batching" in results:
        b = results["batching"]
        lines += [
            "",
            f"8 photos of mixed sizes ({b['groups']} padded sizes), R50 MaskFormer, model.predict semantic: one at a "
            f"time (exact, the default) {b['one_at_a_time_s']:.2f} s, one batch per padded size "
            f"{b['by_padded_size_s']:.2f} s, one batch padded to the largest (changes results) "
            f"{b['padded_together_s']:.2f} s",
        ]
    if "data_loading" in results:
        d = results["data_loading"]
        lines += [
            "",
            "Demo training step (batch 8, 128 x 128, on the CPU):",
            f"loader with 0 workers {d['loader_0_workers_s']:.3f} s, with 1 worker {d['loader_1_workers_s']:.3f} s, "
            f"preloaded batches {d['preloaded_s']:.3f} s",
        ]
    if "bf16_agreement" in results:
        b = results["bf16_agreement"]
        lines.append(f"bf16 vs fp32 semantic maps on {b['images']} demo validation images: {b['agreement']:.4%} agree")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="swin_t,r50,m2f_swin_t,m2f_r50,eomt_s,eomt_l")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    parser.add_argument("--demo-run", default="demo-output/run", help="demo run for the bf16 agreement check")
    parser.add_argument("--skip-models", action="store_true", help="only the demo-based measurements")
    parser.add_argument("--skip-e2e", action="store_true", help="leave out the end-to-end photo rows")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe and args.probe.startswith("e2e:"):
        run_e2e_probe(args.probe)
        return
    if args.probe:
        run_probe(args.probe, args.size)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repeats = 1 if args.quick else args.repeats
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ceiling_fp32": ceiling(torch.float32, device, repeats),
        # The demo's rule (maskformer/precision.py): bfloat16 rows only where bfloat16 is faster than
        # float32; where it is emulated (AVX2-only CPUs: 0.01x) they would take hours and measure the emulation.
        "bf16_speedup": bf16_speed(device).speedup,
        "models": [],
    }
    bf16 = Bf16Speed(results["bf16_speedup"]).fast
    results["ceiling_bf16"] = ceiling(torch.bfloat16, device, repeats) if bf16 else None
    ceilings = {"fp32": results["ceiling_fp32"], "bf16": results["ceiling_bf16"]}
    for name in [] if args.skip_models else args.models.split(","):
        print(f"[bench] {name} ...", flush=True)
        size = EOMT_SIZE if family(name) == "eomt" else args.size
        results["models"].append(bench_model(name, size, repeats, args.quick, device, ceilings))
    e2e_models = [m for m in E2E_MODELS if m in args.models.split(",")]  # the chosen models that have the rows
    if e2e_models and not args.skip_e2e:
        print("[bench] end to end on photos ...", flush=True)
        results["end_to_end"] = end_to_end(device, repeats, e2e_models)
    print("[bench] batch invariance ...", flush=True)
    results["batching"] = batching_cost(device, repeats)
    print("[bench] data loading ...", flush=True)
    results["data_loading"] = data_loading(bf16)
    if bf16 and (Path(args.demo_run) / "model").exists():
        print("[bench] bf16 agreement on the demo model ...", flush=True)
        results["bf16_agreement"] = bf16_agreement(Path(args.demo_run), device)
    text = table(results)
    print(text)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
