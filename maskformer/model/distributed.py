"""The one test for whether several processes take part (torch.distributed initialised, world size > 1)."""

from __future__ import annotations

import torch.distributed as dist


def world_size() -> int:
    """The number of processes of an initialised torch.distributed group, 1 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1
