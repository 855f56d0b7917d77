"""A velocity net's level (a run of transformer blocks at one resolution) with optional activation
checkpointing: with ``activation_checkpointing`` set, each block's activations are recomputed in the
backward pass instead of stored (``torch.utils.checkpoint``, non-reentrant, RNG state preserved),
trading one more forward of the blocks for their activation memory. Gradients equal the stored
ones (tests/test_compile.py); no effect without gradients (sampling, validation).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Level(nn.ModuleList):
    """Blocks ``(x, pos, cond) -> x`` applied in turn."""

    activation_checkpointing = False  # set by the net from its config

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        for block in self:
            x = checkpoint(block, x, pos, cond, use_reentrant=False) if recompute else block(x, pos, cond)
        return x


def set_activation_checkpointing(net: nn.Module, enabled: bool) -> None:
    """Switch every ``Level`` of ``net``."""
    for module in net.modules():
        if isinstance(module, Level):
            module.activation_checkpointing = enabled
