"""GenSIRR's learnable task embedding in both velocity-net families (issue 13)."""

import numpy as np
import pytest
import torch

from latent_pmrf.config import to_dict
from latent_pmrf.models.hdit import HDiT, HDiTConfig
from latent_pmrf.models.looformer import LooUFormer, LooUFormerConfig
from latent_pmrf.models.task_embedding import TaskEmbeddingConfig

LEVELS_HDIT = [dict(depth=1, width=32, d_head=16, kernel_size=3), dict(depth=1, width=64, d_head=16, attention="global")]
LEVELS_LOO = [dict(depth=1, width=32, head_dim=16, kernel_size=3), dict(depth=1, width=64, head_dim=16, attention="global")]


def build(family: str, **task_embedding):
    emb = TaskEmbeddingConfig(**task_embedding) if task_embedding else TaskEmbeddingConfig()
    if family == "hdit":
        return HDiT(HDiTConfig(in_channels=4, out_channels=4, patch_size=1, mapping_width=32, levels=LEVELS_HDIT,
                               task_embedding=emb))
    return LooUFormer(LooUFormerConfig(in_channels=4, out_channels=4, time_embed_dim=32, levels=LEVELS_LOO,
                                       zero_init_last_layer=False, task_embedding=emb))


def live(model):
    """Fan-in-scaled noise on every weight, so zero-initialised outputs and gates pass signal."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif not name.endswith("scale"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("family", ["hdit", "looformer"])
def test_embedding_gets_gradients_changes_and_steers_the_output(family):
    torch.manual_seed(0)
    model = live(build(family, tasks=["bfr", "sirr"], init="random", init_std=0.5))
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.7])
    out_bfr, out_sirr = model(x, t, task=0), model(x, t, task=1)
    assert not torch.allclose(out_bfr, out_sirr)  # the task vector changes the velocity
    before = model.task_emb.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x, t, task=torch.tensor([0, 1])).square().mean().backward()
    assert model.task_emb.weight.grad is not None and model.task_emb.weight.grad.abs().sum(1).gt(0).all()
    optimizer.step()
    assert not torch.equal(model.task_emb.weight, before)


@pytest.mark.parametrize("family", ["hdit", "looformer"])
def test_zero_init_starts_as_the_single_task_net(family):
    torch.manual_seed(1)
    single = live(build(family))
    multi = build(family, tasks=["bfr", "sirr"])
    missing, unexpected = multi.load_state_dict(single.state_dict(), strict=False)
    assert missing == ["task_emb.weight"] and not unexpected
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([0.5])
    torch.testing.assert_close(multi(x, t, task=1), single(x, t), rtol=0, atol=0)


def test_frozen_ablation_does_not_move():
    model = live(build("hdit", tasks=["bfr", "sirr"], init="random", trainable=False))
    before = model.task_emb.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 4, 8, 8), torch.rand(2), task=1).square().mean().backward()
    optimizer.step()
    assert torch.equal(model.task_emb.weight, before) and model.task_emb.weight.grad is None


def test_file_init_and_config_round_trip(tmp_path):
    rows = torch.randn(2, 32)
    np.save(tmp_path / "emb.npy", rows.numpy())
    model = build("looformer", tasks=["bfr", "sirr"], init="file", init_file=str(tmp_path / "emb.npy"))
    assert torch.equal(model.task_emb.weight.detach(), rows)
    again = LooUFormer(LooUFormerConfig(**to_dict(model.config)))  # a stored config rebuilds the same net
    again.load_state_dict(model.state_dict())
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([0.2])
    torch.testing.assert_close(again(x, t, task=1), model(x, t, task=1))
    np.save(tmp_path / "bad.npy", np.zeros((3, 32), np.float32))
    with pytest.raises(ValueError, match=r"bad\.npy: shape \(3, 32\), expected \(2, 32\)"):
        build("hdit", tasks=["bfr", "sirr"], init="file", init_file=str(tmp_path / "bad.npy"))


def test_task_ids_are_checked():
    single, multi = build("hdit"), build("hdit", tasks=["bfr", "sirr"])
    x, t = torch.randn(2, 4, 8, 8), torch.rand(2)
    with pytest.raises(ValueError, match="single-task"):
        single(x, t, task=0)
    with pytest.raises(ValueError, match=r"multi-task \(\['bfr', 'sirr'\]\)"):
        multi(x, t)
    with pytest.raises(ValueError, match="one per image"):
        multi(x, t, task=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="unknown task 'deblur'"):
        multi.task_emb.index("deblur")
    with pytest.raises(ValueError, match="duplicates"):
        TaskEmbeddingConfig(tasks=["bfr", "bfr"])
