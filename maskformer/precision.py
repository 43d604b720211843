"""Whether bfloat16 pays on a device: measured, because CPUs differ.

An Intel Xeon with AMX multiplies bfloat16 matrices several times faster than float32; a CPU without bfloat16
instructions (AVX2 only: an AMD EPYC of the Zen 3 generation) emulates them, and there the demo's bf16-mixed
training step took 6.7 s against 0.61 s in float32. A lookup of CPU flags would be OS-specific and miss
cases; timing one matrix product in each type answers the question the caller has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

EMULATED_BELOW = 0.25  # a speedup this low means bfloat16 is emulated (0.0125 on an AVX2-only AMD EPYC)
PROBE_SIZE = 512  # a product of two 512 x 512 matrices: milliseconds where bfloat16 is native, 0.3 s where emulated


@dataclass(frozen=True)
class Bf16Speed:
    """float32's time over bfloat16's for the same matrix product on one device (above 1: bfloat16 is faster)."""

    speedup: float

    @property
    def fast(self) -> bool:
        """Whether bfloat16 autocast should speed training up here."""
        return self.speedup > 1.0

    def describe(self) -> str:
        """One clause for a console line."""
        if self.fast:
            return f"bfloat16 matrix products ran {self.speedup:.1f}x as fast as float32 here"
        said = f"bfloat16 matrix products ran at {self.speedup:.2f}x float32's speed here"
        # Native bfloat16 that merely loses to float32 stays within a small factor; emulation loses 10-100x.
        return said + ": no bfloat16 arithmetic" if self.speedup < EMULATED_BELOW else said


def bf16_speed(device: str | torch.device = "cpu", repeats: int = 3) -> Bf16Speed:
    """Time a PROBE_SIZE-square matrix product in float32 and in bfloat16 on ``device`` (the best of
    ``repeats`` runs each, after a warm-up) and return the ratio."""
    device = torch.device(device)
    a = torch.randn(PROBE_SIZE, PROBE_SIZE, device=device)

    def best(dtype: torch.dtype) -> float:
        x = a.to(dtype)
        x @ x  # warm-up: the first call picks and prepares the kernel
        times = []
        for _ in range(repeats):
            _synchronize(device)
            start = time.perf_counter()
            x @ x
            _synchronize(device)
            times.append(time.perf_counter() - start)
        return min(times)

    return Bf16Speed(best(torch.float32) / best(torch.bfloat16))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
