"""Strict state-dict loading with one readable error: which file, which keys are missing or
unexpected (the first few and how many) and which shapes differ."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import torch
from torch import nn

SHOWN_KEYS = 8  # offenders listed per kind; the count says how many more there are
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _listing(label: str, items: list[str]) -> str:
    more = f", ... ({len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else ""
    return f"{label} ({len(items)}): {', '.join(items[:SHOWN_KEYS])}{more}"


def check_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, note: str = "") -> None:
    """Raise ``ValueError`` unless ``state`` has exactly ``module``'s keys with its shapes. ``source``
    names the file (and part of it) the state came from; ``note`` ends the message."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k} {tuple(state[k].shape)} vs {expected[k]}"
                  for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]
    problems = [_listing(label, items) for label, items in (
        ("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches (file vs model)", mismatched),
    ) if items]
    if problems:
        raise ValueError(f"{source} does not match the {type(module).__name__} it is loaded into: "
                         + "; ".join(problems) + (f". {note}" if note else ""))


def load_strict(module: ModuleT, state: Mapping[str, torch.Tensor], source: str, note: str = "") -> ModuleT:
    """``module`` with ``state`` loaded after :func:`check_strict`; returns ``module``."""
    check_strict(module, state, source, note)
    module.load_state_dict(state, strict=True)
    return module
