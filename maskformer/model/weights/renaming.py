"""Rule-based renaming of foreign state dicts, with fusion of split q/k/v projections."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

# A rule maps a matching key to a new name (or None to drop the key on purpose).
Rule = tuple[str, str | Callable[[re.Match], str] | None]
# Keys renamed to "<name>#<i>" are pieces of one tensor, concatenated along dim 0 in order of i.
FUSE_MARK = "#"


@dataclass
class Renamed:
    state_dict: dict[str, Tensor]
    unmatched: list[str] = field(default_factory=list)


def rename_state_dict(state: Mapping[str, Tensor], rules: Sequence[Rule]) -> Renamed:
    """Apply the first matching rule (``re.match`` on the whole key) to every key.

    Keys no rule matches are reported in ``unmatched``; rules whose target is None drop keys silently.
    """
    out: dict[str, Tensor] = {}
    pieces: dict[str, dict[int, Tensor]] = {}
    unmatched = []
    compiled = [(re.compile(p), target) for p, target in rules]
    for key, value in state.items():
        for pattern, target in compiled:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            if target is not None:
                new = target(match) if callable(target) else match.expand(target)
                if FUSE_MARK in new:
                    name, index = new.split(FUSE_MARK)
                    pieces.setdefault(name, {})[int(index)] = value
                else:
                    out[new] = value
            break
        else:
            unmatched.append(key)
    for name, parts in pieces.items():
        out[name] = torch.cat([parts[i] for i in sorted(parts)], dim=0)
    return Renamed(out, unmatched)
