"""AdamW parameter groups and learning-rate schedules of the original training recipes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..model import Segmenter
from ..model.families import family_of
from .config import TrainConfig

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: Segmenter, cfg: TrainConfig) -> list[dict]:
    """Each parameter's learning rate is the run's times its family's factor (``Family.lr_factor``: the
    backbone multiplier for the backbone's, in the papers); norms, embeddings and relative-position tables get
    their own weight decay (detectron2's build_optimizer). Parameters with equal settings share a group, so
    the fused AdamW update stays a few large kernels."""
    lr_factor = family_of(model.config).lr_factor
    two_stage = cfg.schedule == "two_stage_poly"
    groups: dict[tuple[float, float, bool], dict] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{name}" if module_name else name
            lr = cfg.lr * lr_factor(model.config, full_name, cfg.backbone_lr_multiplier)
            wd = cfg.weight_decay
            if isinstance(module, _NORMS):
                wd = cfg.weight_decay_norm
            elif isinstance(module, nn.Embedding) or "relative_position_bias_table" in name:
                wd = cfg.weight_decay_embed
            backbone = two_stage and full_name.startswith("backbone.")  # a schedule of its own (lr_lambda)
            group = groups.setdefault((lr, wd, backbone), {"params": [], "lr": lr, "weight_decay": wd,
                                                           "backbone": backbone})  # fmt: skip
            group["params"].append(param)
    return list(groups.values())


def lr_lambda(cfg: TrainConfig, backbone: bool = False):
    """Multiplier of a parameter group's learning rate at a step (``cfg.schedule``): warm-up then poly (power
    0.9) or step decay; or EoMT's two-stage warm-up and poly, where ``backbone`` groups have their own stage."""

    def factor(step: int) -> float:
        if cfg.schedule == "two_stage_poly":
            wait, ramp = (cfg.warmup_steps, cfg.backbone_warmup_steps) if backbone else (0, cfg.warmup_steps)
            if step < wait:
                return 0.0
            if step < wait + ramp:
                return (step - wait) / ramp
            start = wait + ramp
            return max(0.0, 1 - (step - start) / max(1, cfg.max_steps - start)) ** cfg.poly_power
        if cfg.schedule == "poly":
            value = (1 - min(step, cfg.max_steps) / cfg.max_steps) ** cfg.poly_power
        else:
            value = cfg.step_gamma ** sum(step >= m for m in cfg.step_milestones)
        if step < cfg.warmup_steps:
            alpha = step / cfg.warmup_steps
            value *= cfg.warmup_factor * (1 - alpha) + alpha
        return value

    return factor


# Devices with AdamW's fused kernel for float parameters.
_FUSED_DEVICES = ("cpu", "cuda")


def fused_update(cfg: TrainConfig, params: list[Tensor]) -> bool:
    """Whether AdamW takes its fused kernel: one pass over each parameter's values, where the default on the CPU
    is a loop of a dozen whole-tensor operations per parameter (the demo's step: 58 ms against 17 ms for the
    update, 4% of the step, AMD EPYC). Not under 16-mixed: its GradScaler must unscale the gradients before
    they are clipped, which a fused optimizer does only inside its step."""
    return cfg.precision != "16-mixed" and all(
        p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params
    )


def state_in_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded state tensor its parameter's memory layout. ``Optimizer.load_state_dict`` keeps the
    strides the checkpoint was saved with, and the fused kernel walks a parameter and its moments as flat
    arrays: moments saved channels-last and resumed by a run in NCHW (another ``train.channels_last``, or
    another machine's measured layout) would be added to the wrong elements, silently."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, Tensor) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def build_optimizer(
    model: nn.Module, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over :func:`param_groups`, fused where :func:`fused_update` allows, and its schedule. The model must be
    on its device already (Lightning moves it before ``configure_optimizers``)."""
    groups = param_groups(model, cfg)
    fused = fused_update(cfg, [p for g in groups for p in g["params"]])
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    optimizer.register_load_state_dict_post_hook(state_in_parameter_layout)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [lr_lambda(cfg, g["backbone"]) for g in groups])
    return optimizer, scheduler
