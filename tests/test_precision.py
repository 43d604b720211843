"""The rule that picks bfloat16 (the demo's training precision, the bench's bf16 rows): measured per device."""

from __future__ import annotations

import math
from pathlib import Path

from maskformer.demo import demo_config
from maskformer.precision import Bf16Speed, bf16_speed


def test_bf16_speed_is_a_measured_ratio_and_fast_means_faster():
    speed = bf16_speed("cpu", repeats=1)
    assert math.isfinite(speed.speedup) and speed.speedup > 0
    assert speed.fast == (speed.speedup > 1.0)
    assert Bf16Speed(3.0).fast and "3.0x as fast" in Bf16Speed(3.0).describe()
    assert not Bf16Speed(0.02).fast and "no bfloat16 arithmetic" in Bf16Speed(0.02).describe()
    assert not Bf16Speed(0.9).fast and "no bfloat16 arithmetic" not in Bf16Speed(0.9).describe()


def test_demo_trains_in_bf16_only_when_told():
    assert demo_config(Path("data"), 2).train.precision == "32-true"
    assert demo_config(Path("data"), 2, bf16=True).train.precision == "bf16-mixed"
