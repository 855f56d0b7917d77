"""The one strict state-dict loader (models/state_dict.py), checked against torch's own key report."""

import re

import pytest
import torch
from torch import nn

from latent_pmrf.models.state_dict import SHOWN_KEYS, load_strict


def make_module() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def torch_key_report(state: dict) -> tuple[set, set]:
    """Missing and unexpected keys as torch itself reports them (a fresh module, strict=False)."""
    result = make_module().load_state_dict(state, strict=False)
    return set(result.missing_keys), set(result.unexpected_keys)


def listed(message: str, label: str) -> set[str]:
    match = re.search(rf"{label} \((\d+)\): ([^;]*?)(?:, \.\.\. \(\d+ more\))?(?:;|\. |$)", message)
    return set(match.group(2).split(", ")) if match else set()


@pytest.mark.parametrize("edit", [
    lambda s: s.pop("1.running_mean"),
    lambda s: s.update({"3.extra": torch.zeros(1)}),
    lambda s: (s.pop("0.bias"), s.update({"0.bias_renamed": torch.zeros(4)})),
], ids=["missing", "unexpected", "both"])
def test_missing_and_unexpected_keys_are_the_ones_torch_reports(edit):
    state = dict(make_module().state_dict())
    edit(state)
    missing, unexpected = torch_key_report(state)
    with pytest.raises(ValueError) as err:
        load_strict(make_module(), state, "some/file.pth")
    message = str(err.value)
    assert message.startswith("some/file.pth does not match the Sequential")
    assert listed(message, "missing keys") == missing and listed(message, "unexpected keys") == unexpected
    if missing:
        assert f"missing keys ({len(missing)})" in message


def test_shape_mismatches_are_the_ones_torch_refuses():
    state = dict(make_module().state_dict())
    state["3.weight"] = torch.zeros(2, 5)
    with pytest.raises(RuntimeError, match=r"size mismatch for 3\.weight"):
        make_module().load_state_dict(state)
    with pytest.raises(ValueError, match=r"shape mismatches \(file vs model\) \(1\): 3\.weight \(2, 5\) vs \(2, 4\)"):
        load_strict(make_module(), state, "f.safetensors")


def test_long_lists_show_the_first_few_and_the_count():
    module = nn.Sequential(*[nn.Linear(2, 2) for _ in range(SHOWN_KEYS)])  # 2·SHOWN_KEYS parameters
    with pytest.raises(ValueError) as err:
        load_strict(module, {}, "empty.pth", note="Expected a chain of Linears.")
    message = str(err.value)
    total = 2 * SHOWN_KEYS
    assert f"missing keys ({total}): " in message and f", ... ({total - SHOWN_KEYS} more)" in message
    assert len(listed(message, "missing keys")) == SHOWN_KEYS and message.endswith(". Expected a chain of Linears.")


def test_a_matching_state_is_loaded_and_the_module_returned():
    source = make_module()
    with torch.no_grad():
        for p in source.parameters():
            p.uniform_(-1, 1)
    target = make_module()
    assert load_strict(target, source.state_dict(), "ok.pth") is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
