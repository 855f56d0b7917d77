"""Low-rank adapters (LoRA, Hu et al. 2021) on the Conv2d and Linear layers of any module, merged
back into plain weights for export (GenSIRR Stage I: a rank-8 LoRA on the VAE encoder).

Each adapted layer's weight becomes a parametrization W' = W + (alpha / rank) · B·A with
A: (rank, fan_in) and B: (out, rank), B initialised to zero so the adapted model starts equal to
the base (peft's LoRA: A kaiming-uniform, B zeros; a conv's A spans in_channels × kernel, as peft's
``Conv2d`` adapter). Working on the weight instead of the activations keeps the layer's own
forward (padding, stride, groups) untouched and costs one (out × rank × fan_in) product per call.

``merge_lora`` folds W' into the weight and removes the parametrization: the model's
``state_dict`` then has exactly the base keys again, so ``SimVAE.save_pretrained`` writes the
official snapshot format.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

ADAPTED_TYPES = (nn.Conv2d, nn.Linear)


@dataclass
class LoRAConfig:
    rank: int = 8  # GenSIRR Stage I
    alpha: float = 8.0  # scale alpha / rank, as peft's lora_alpha (alpha = rank: scale 1)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")


class LowRankDelta(nn.Module):
    """Parametrization W -> W + scale · (B @ A) reshaped to W's shape."""

    def __init__(self, weight: torch.Tensor, rank: int, scale: float):
        super().__init__()
        out_features, fan_in = weight.shape[0], weight[0].numel()
        self.scale = scale
        self.lora_A = nn.Parameter(torch.empty(rank, fan_in, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # (out, rank) @ (rank, fan_in) -> (out, fan_in) -> W's (out, in, kh, kw) or (out, in)
        return weight + self.scale * (self.lora_B @ self.lora_A).view_as(weight)


def _layers_under(model: nn.Module, modules: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """(dotted name, layer) of every Conv2d / Linear inside the named submodules."""
    found = []
    for prefix in modules:
        try:
            root = model.get_submodule(prefix)
        except AttributeError as err:
            children = [name for name, _ in model.named_children()]
            raise ValueError(f"no submodule {prefix!r} in {type(model).__name__} (its children: {children})") from err
        layers = [(f"{prefix}.{name}" if name else prefix, m) for name, m in root.named_modules()
                  if isinstance(m, ADAPTED_TYPES)]
        if not layers:
            raise ValueError(f"submodule {prefix!r} of {type(model).__name__} has no Conv2d or Linear layer to adapt")
        found += layers
    return found


def add_lora(model: nn.Module, modules: Sequence[str], cfg: LoRAConfig) -> list[str]:
    """Adapters on every Conv2d / Linear under the dotted submodule names ``modules`` (e.g.
    ``["encoder"]``); every other parameter is frozen. Returns the adapted layers' names."""
    model.requires_grad_(False)
    layers = _layers_under(model, modules)
    for name, layer in layers:
        if parametrize.is_parametrized(layer, "weight"):
            raise ValueError(f"{name} already has an adapter (listed twice in modules {list(modules)}?)")
        adapter = LowRankDelta(layer.weight, cfg.rank, cfg.alpha / cfg.rank)
        parametrize.register_parametrization(layer, "weight", adapter)
    return [name for name, _ in layers]


def lora_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    for module in model.modules():
        if isinstance(module, LowRankDelta):
            yield from (module.lora_A, module.lora_B)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight (W <- W + scale·B·A) and drop the
    parametrization; the model keeps computing the same function. Returns ``model``."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            if not all(isinstance(p, LowRankDelta) for p in module.parametrizations["weight"]):
                raise ValueError(f"{type(module).__name__} has a weight parametrization that is not a LoRA adapter")
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def prepare_finetuning(model: nn.Module, modules: Sequence[str], lora: LoRAConfig | None) -> list[str]:
    """Freeze ``model`` except what fine-tuning trains: with ``lora``, adapters on the Conv2d /
    Linear layers of ``modules``; without, every parameter of ``modules``. Returns the names of the
    trainable parameters."""
    if lora is not None:
        add_lora(model, modules, lora)
    else:
        model.requires_grad_(False)
        for prefix in modules:
            _layers_under(model, [prefix])  # the same clear error for an unknown name
            model.get_submodule(prefix).requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]
