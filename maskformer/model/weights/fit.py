"""Whether a state dict fits a model: the names and shapes that keep it from loading, summarised in one line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class StateDiff:
    """Names the model has and the state dict lacks (``missing``), names only the state dict has
    (``unexpected``), and names whose shapes differ (``shapes``: "name [given] (model [expected])")."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)

    @classmethod
    def between(cls, expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> StateDiff:
        return cls(
            [k for k in expected if k not in given],
            [k for k in given if k not in expected],
            [f"{k} {list(v.shape)} (model {list(expected[k].shape)})" for k, v in given.items()
             if k in expected and v.shape != expected[k].shape],
        )  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    @property
    def count(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.shapes)

    def summary(self, shown: int = 3) -> str:
        """E.g. "2 missing: a, b; 1 of another shape: c [6, 128] (model [4, 128])"."""
        parts = [
            f"{len(keys)} {what}: {', '.join(keys[:shown])}{', ...' if len(keys) > shown else ''}"
            for what, keys in (("of another shape", self.shapes), ("missing", self.missing),
                               ("unexpected", self.unexpected))
            if keys
        ]  # fmt: skip
        return "; ".join(parts)
