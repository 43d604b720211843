"""Example images the page offers, so that it can be tried with no file at hand: scenes of the package's
synthetic dataset (textured background regions and overlapping shapes), generated at start-up."""

from __future__ import annotations

import numpy as np

from ..data.io import encode_png
from ..data.synth import render

EXAMPLE_SEEDS = (11, 12, 13)
EXAMPLE_SIZE = (224, 320)


def example_images() -> dict[str, bytes]:
    """Example name -> PNG bytes; the same images every time."""
    return {
        f"example-{seed}": encode_png(render(np.random.default_rng(seed), EXAMPLE_SIZE)[0]) for seed in EXAMPLE_SEEDS
    }
