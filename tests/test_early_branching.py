"""Early-branching selection (GenSIRR's DEBS, issue 13): the sampler's choice, cost and formula against
hand-made cases, its k = 1 identity with sample_euler, the pipeline and CLI with tiny random nets,
and the scorers (depth sign and reduction on a stand-in model, missing files, the metric table)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from latent_pmrf.flow import RestorationPipeline, sample_early_branching, sample_euler
from latent_pmrf.flow.scorers import SCORERS, DepthScorer, build_scorer, sharpness
from latent_pmrf.weights import MissingWeightsError, check_table


def zero_velocity(x, t):
    return torch.zeros_like(x)


class CountingVelocity:
    """Counts velocity evaluations in units of B images (a call on k·B items counts k) and calls."""

    def __init__(self, net, batch: int):
        self.net, self.batch, self.evaluations, self.calls = net, batch, 0, 0

    def __call__(self, x, t):
        assert x.shape[0] % self.batch == 0 and t.shape == (x.shape[0],)
        self.evaluations += x.shape[0] // self.batch
        self.calls += 1
        return self.net(x, t)


def tiny_velocity(channels: int = 3):
    """A small nonlinear, per-image v(x, t)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels + 1, channels, 3, padding=1)
    return lambda x, t: torch.tanh(conv(torch.cat([x, t.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])], 1)))


def test_picks_the_branch_the_scorer_rates_best_per_image():
    # zero velocity: every branch stays its source, so x̂1 = x0 and the output is the chosen source.
    # Branch j of image b is noise of amplitude amplitudes[j][b]; sharpness grows with the amplitude.
    amplitudes = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.2, 0.1], [0.2, 0.4, 0.8], [0.3, 0.1, 0.2]])  # (k, B)
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sources = [a.view(-1, 1, 1, 1) * noise for a in amplitudes]
    x, chosen = sample_early_branching(zero_velocity, sources, 3, sharpness, return_indices=True)
    assert chosen.tolist() == [1, 0, 2] == amplitudes.argmax(0).tolist()
    assert torch.equal(x, torch.stack([sources[j][b] for b, j in enumerate(chosen.tolist())]))


def test_choice_is_per_image_and_does_not_depend_on_the_batch():
    velocity = tiny_velocity()
    sources = [torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(j)) for j in range(4)]
    x, chosen = sample_early_branching(velocity, sources, 4, sharpness, branch_steps=2, return_indices=True)
    for b in range(3):
        alone, alone_chosen = sample_early_branching(velocity, [s[b : b + 1] for s in sources], 4, sharpness,
                                                     branch_steps=2, return_indices=True)
        assert alone_chosen.item() == chosen[b].item()
        torch.testing.assert_close(alone[0], x[b], rtol=1e-5, atol=1e-6)  # conv batching may reorder sums


@pytest.mark.parametrize("branches,branch_steps,steps", [(4, 1, 5), (3, 2, 4), (1, 1, 3), (2, 3, 3), (16, 1, 25)])
def test_cost_is_k_m_plus_K_minus_m_velocity_evaluations_k_decodes_and_k_scores(branches, branch_steps, steps):
    batch = 2
    velocity = CountingVelocity(lambda x, t: -x, batch)
    decodes, scores = [], []
    sources = [torch.randn(batch, 3, 4, 4) for _ in range(branches)]
    sample_early_branching(velocity, sources, steps, lambda x: scores.append(x) or x.mean((1, 2, 3)),
                           branch_steps=branch_steps, decode=lambda x: decodes.append(x) or x)
    assert velocity.evaluations == branches * branch_steps + steps - branch_steps
    assert velocity.calls == steps  # m calls on k·B items, K - m on B
    assert len(decodes) == len(scores) == branches and all(d.shape[0] == batch for d in decodes)


@pytest.mark.parametrize("schedule", ["uniform", "flow_match_euler"])
def test_one_branch_equals_sample_euler_bit_for_bit(schedule):
    velocity = tiny_velocity()
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for branch_steps in (1, 3):
        x = sample_early_branching(velocity, [x0], 5, sharpness, branch_steps=branch_steps, schedule=schedule)
        assert torch.equal(x, sample_euler(velocity, x0, 5, schedule=schedule))


def test_one_step_end_point_by_hand():
    # v(x, t) = x/2 + 2t, uniform K = 4, m = 2, x0 = 1 (every value below is exact in binary):
    # x(1/4) = 1 + 1/4 · 1/2 = 1.125; v(x(1/4), 1/4) = 0.5625 + 0.5 = 1.0625;
    # x̂1 = 1.125 + 3/4 · 1.0625 = 1.921875. From x0 = 0: x(1/4) = 0, v = 0.5, x̂1 = 0.375.
    seen = []
    x, chosen = sample_early_branching(lambda x, t: x / 2 + 2 * t.view(-1, 1), [torch.ones(1, 1), torch.zeros(1, 1)],
                                       4, lambda x: seen.append(x) or -x[:, 0], branch_steps=2, return_indices=True)
    assert [s.item() for s in seen] == [1.921875, 0.375] and chosen.item() == 1


# ---------------------------------------------------------------- pipeline and CLI with tiny random nets
def tiny_pipeline(latent: bool) -> RestorationPipeline:
    from latent_pmrf.models.hdit import HDiT, HDiTConfig
    from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
    from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

    torch.manual_seed(0)
    channels = 4 if latent else 3
    vae = SimVAE(SimVAEConfig(block_out_channels=[8, 8], layers_per_block=1, layers_mid_block=1,
                              latent_channels=4)) if latent else None
    velocity = HDiT(HDiTConfig(in_channels=channels, out_channels=channels, patch_size=2, mapping_width=32, levels=[
        dict(depth=1, width=32, d_head=16, kernel_size=3), dict(depth=1, width=64, d_head=16, attention="global")]))
    for weight in velocity.parameters():  # HDiT zero-initialises its output and residual projections: v would be 0
        if not weight.any():
            torch.nn.init.normal_(weight, std=0.05)
    swinir = SwinIR(SwinIRConfig(embed_dim=12, depths=[1], num_heads=[2], window_size=4, scale=4, img_size=16,
                                 upsample_channels=8))
    return RestorationPipeline(swinir, velocity, vae, source_noise_std=0.2 if vae is None else 0.1).eval()


@pytest.mark.parametrize("latent", [False, True])
def test_pipeline_one_branch_is_restore_and_k_branches_restore_the_chosen_draw(latent):
    pipeline = tiny_pipeline(latent)
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    generators = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    plain, posterior_mean = pipeline.restore(lq, 2, generator=generators())
    one, same_mean, chosen = pipeline.restore_early_branching(lq, sharpness, 1, 2, generator=generators())
    assert torch.equal(one, plain) and torch.equal(same_mean, posterior_mean) and chosen.tolist() == [0, 0]

    seen = []
    out, _, chosen = pipeline.restore_early_branching(lq, lambda im: seen.append(im) or sharpness(im), 3, 2,
                                                      generator=generators())
    assert len(seen) == 3 and all(im.shape == (2, 3, 16, 16) and 0 <= im.min() and im.max() <= 1 for im in seen)
    assert chosen.tolist() == torch.stack([sharpness(im) for im in seen]).argmax(0).tolist()
    for b, (draw, generator) in enumerate(zip(chosen.tolist(), generators())):  # draw j: the generator's (j+1)-th
        for _ in range(draw + 1):
            x0, _ = pipeline.source(lq[b : b + 1], [generator])
        expected = pipeline.space.decode(sample_euler(pipeline.velocity, x0, 2)).clamp(-1, 1)
        torch.testing.assert_close(out[b : b + 1], expected, rtol=1e-4, atol=1e-5)


def test_cli_restore_with_branches_end_to_end(tmp_path, capsys):
    from latent_pmrf.cli.main import main
    from latent_pmrf.cli.restore import restore

    tiny_pipeline(latent=False).save_pretrained(tmp_path / "pipe")
    (tmp_path / "in").mkdir()  # outputs outside the input folder (restore refuses to read its own outputs)
    for name, seed in (("a.png", 0), ("b.png", 1)):
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
            tmp_path / "in" / name)
    inputs = [str(tmp_path / "pipe"), str(tmp_path / "in"), str(tmp_path / "out")]
    main(["restore", "--ckpt", inputs[0], "--input", inputs[1], "--output", inputs[2], "--steps", "3", "--device",
          "cpu", "--batch-size", "2", "--branches", "3", "--branch-steps", "2", "--scorer", "sharpness"])
    assert "images per chosen draw" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out" / "restored").iterdir()) == ["a.png", "b.png"]
    assert Image.open(tmp_path / "out" / "restored" / "a.png").size == (24, 20)
    summary = restore(*inputs[:2], tmp_path / "out1", steps=3, branches=3, branch_steps=2, scorer="sharpness")
    assert sorted(summary.chosen_branch) == sorted(summary.written) and set(summary.chosen_branch.values()) <= {0, 1, 2}
    for flags, message in ((["--branches", "3"], "needs --scorer"), (["--scorer", "sharpness"], "give --branches"),
                           (["--branches", "2", "--scorer", "nope"], "unknown scorer 'nope'; known: depth"),
                           (["--branches", "2", "--branch-steps", "4", "--scorer", "sharpness"], "--branch-steps")):
        with pytest.raises(SystemExit) as exit_info:
            main(["restore", "--ckpt", inputs[0], "--input", inputs[1], "--output", inputs[2], "--steps", "3",
                  "--device", "cpu", "--overwrite", *flags])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


# ---------------------------------------------------------------- scorers
def tiny_depth_anything(folder, kind: str = "relative"):
    """A randomly initialised Depth-Anything of a few thousand weights, saved as a local snapshot."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
                            image_size=28, patch_size=14, out_features=["stage1", "stage2"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, fusion_hidden_size=8, head_hidden_size=8,
                                 neck_hidden_sizes=[4, 4], reassemble_hidden_size=8, reassemble_factors=[4, 2],
                                 patch_size=14, depth_estimation_type=kind, max_depth=20 if kind == "metric" else 1)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                      do_pad=False).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind,reduction,deepest", [("relative", "mean", 1), ("relative", "median", 2),
                                                    ("metric", "mean", 2)])
def test_depth_scorer_deepest_map_wins(tmp_path, monkeypatch, kind, reduction, deepest):
    """Maps of 16 pixels: A = 1 everywhere, B = 0.2, C = 0.1 on 12 pixels and 5 on 4 (mean 1.325,
    median 0.1). As disparity (relative model) the deepest is B by the mean, C by the median; as
    metric depth, C by the mean."""
    scorer = DepthScorer(reduction, folder=tiny_depth_anything(tmp_path / "da", kind))
    images = torch.rand(3, 3, 30, 40)
    assert scorer.prediction(images).shape[0] == 3 and scorer.prediction(images).shape[1] % 14 == 0  # real network
    maps = torch.stack([torch.ones(16), torch.full((16,), 0.2), torch.tensor([0.1] * 12 + [5.0] * 4)]).view(3, 4, 4)
    monkeypatch.setattr(scorer, "model", lambda pixel_values: SimpleNamespace(predicted_depth=maps))
    scores = scorer(images)
    assert scores.shape == (3,) and scores.argmax().item() == deepest
    reduced = maps.flatten(1).mean(1) if reduction == "mean" else maps.flatten(1).median(1).values
    assert torch.equal(scores, -reduced if kind == "relative" else reduced)


def test_depth_scorer_missing_files_name_the_file_and_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError) as err:
        build_scorer("depth")
    message = str(err.value)
    assert "model.safetensors" in message and "depth-anything/Depth-Anything-V2-Small-hf" in message
    assert str(tmp_path / "hf" / "models--depth-anything--Depth-Anything-V2-Small-hf") in message
    assert "depth_anything_v2_small" in {row["key"] for row in check_table()}  # `latent-pmrf weights check`
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match=rf"model\.safetensors, preprocessor_config\.json in {folder}"):
        DepthScorer(folder=folder)


def test_every_no_reference_metric_is_a_scorer_signed_by_its_direction(tmp_path, monkeypatch):
    from latent_pmrf.metrics import registry

    assert set(registry.GROUPS["no_reference"]) <= set(SCORERS)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match="musiq_koniq_ckpt-e95806b9.pth"):
        build_scorer("musiq")  # built through the metric table: its weight check, before pyiqa builds anything

    class Fake:
        def __init__(self, name):
            self.info = registry.metric_info(name)

        def __call__(self, images):
            return torch.tensor([1.0, 2.0], dtype=torch.float64)

    monkeypatch.setattr(registry, "build_metrics", lambda names, device: {n: Fake(n) for n in names})
    images = torch.rand(2, 3, 8, 8)
    assert build_scorer("musiq")(images).tolist() == [1.0, 2.0]  # higher is better
    assert build_scorer("niqe")(images).tolist() == [-1.0, -2.0]  # lower is better: negated
