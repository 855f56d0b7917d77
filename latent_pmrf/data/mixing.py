"""The check shared by the datasets that draw each item from one of several parts with fixed
ratios: ``sirr_datasets.MixedSourcesDataset`` (DSRNet's data sources) and
``task_mix.TaskMixDataset`` (the tasks of a multi-task flow)."""

from __future__ import annotations


def check_mixture(sizes: list[int], ratios: list[float], length: int, part: str) -> None:
    """One ratio per part, >= 0 and summing to 1; no part drawn from (ratio > 0) is empty; at
    least one item per epoch. ``part`` names the parts in the messages ("source", "task")."""
    if len(sizes) != len(ratios) or not sizes:
        raise ValueError(f"need one ratio per {part}, got {len(ratios)} ratio(s) for {len(sizes)} {part}(s)")
    if any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"{part} ratios must be >= 0 and sum to 1, got {ratios}")
    empty = [k for k, (size, ratio) in enumerate(zip(sizes, ratios)) if ratio > 0 and size == 0]
    if empty:
        raise ValueError(f"{part}(s) {empty} have a ratio > 0 but no items")
    if length < 1:
        raise ValueError(f"a mixture of {part}s needs length >= 1, got {length}")
