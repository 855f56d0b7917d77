"""Rectified flow: the Euler sampler and the loss on analytic cases, stratified times, the spaces."""

import math

import pytest
import torch

from latent_pmrf.flow import (LatentSpace, PixelSpace, flow_matching_loss, interpolate, sample_euler,
                              source_sample, stratified_uniform)
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig


def test_constant_velocity_reaches_the_target_exactly():
    x0, x1 = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    out = sample_euler(lambda x, t: x1 - x0, x0, steps=7)
    torch.testing.assert_close(out, x1, rtol=1e-6, atol=1e-6)


def test_straight_line_field_is_integrated_exactly():
    # v(x, t) = (x1 - x) / (1 - t) is the rectified velocity towards a fixed x1; Euler lands on x1.
    x0, x1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    out = sample_euler(lambda x, t: (x1 - x) / (1 - t.view(-1, 1, 1, 1)), x0, steps=5)
    torch.testing.assert_close(out, x1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 4, 25])
def test_linear_ode_matches_the_euler_closed_form(steps):
    # dx/dt = a·x: K Euler steps give x0·(1 + a/K)^K (-> x0·e^a as K grows).
    a, x0 = 0.7, torch.randn(2, 3, dtype=torch.float64)
    out = sample_euler(lambda x, t: a * x, x0, steps=steps)
    torch.testing.assert_close(out, x0 * (1 + a / steps) ** steps)
    assert (1 + a / 25) ** 25 == pytest.approx(math.exp(a), rel=1e-2)


def test_times_passed_are_uniform_grid_per_sample():
    seen = []
    sample_euler(lambda x, t: (seen.append(t.clone()), torch.zeros_like(x))[1], torch.zeros(3, 1), steps=4)
    assert [s.tolist() for s in seen] == [[i / 4] * 3 for i in range(4)]
    out, traj = sample_euler(lambda x, t: torch.ones_like(x), torch.zeros(1, 1), steps=4, return_trajectory=True)
    assert len(traj) == 5 and torch.equal(traj[-1], out)
    with pytest.raises(ValueError, match="steps"):
        sample_euler(lambda x, t: x, torch.zeros(1), steps=0)


def test_loss_is_zero_for_the_oracle_and_matches_the_formula():
    x0, x1 = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    t = torch.rand(4)
    assert flow_matching_loss(lambda x, t: x1 - x0, x0, x1, t).item() == pytest.approx(0.0, abs=1e-12)
    xt = interpolate(x0, x1, t)
    torch.testing.assert_close(xt[1], t[1] * x1[1] + (1 - t[1]) * x0[1])
    loss = flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, x1, t)
    torch.testing.assert_close(loss, ((x1 - x0) ** 2).mean())


def test_stratified_times_cover_every_bin_across_ranks():
    batch, world = 4, 3
    g = torch.Generator().manual_seed(0)
    times = torch.cat([stratified_uniform(batch, rank, world, generator=g) for rank in range(world)])
    bins = (times * batch * world).floor().long().sort().values
    assert bins.tolist() == list(range(batch * world))
    with pytest.raises(ValueError):
        stratified_uniform(2, rank=3, world_size=3)


def test_spaces_and_source_sample():
    pm = torch.rand(2, 3, 16, 16) * 2.4 - 1.2  # outside [-1, 1] on purpose: f(y) is clipped
    g = torch.Generator().manual_seed(0)
    z0 = source_sample(PixelSpace(), pm, 0.2, generator=g)
    noise = torch.randn(pm.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z0, pm.clamp(-1, 1) + 0.2 * noise)

    vae = SimVAE(SimVAEConfig(block_out_channels=[8, 8], layers_per_block=1, layers_mid_block=1, latent_channels=4,
                              scaling_factor=0.5, shift_factor=0.1))
    space = LatentSpace(vae, sample_posterior=False)
    space.train()
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    z = space.encode(pm.clamp(-1, 1))
    torch.testing.assert_close(z, (vae.encode(pm.clamp(-1, 1)).mode() - 0.1) * 0.5)
    torch.testing.assert_close(space.decode(z), vae.decode(z / 0.5 + 0.1))
    assert source_sample(space, pm, 0.1, torch.Generator().manual_seed(1)).shape == (2, 4, 8, 8)


def test_flow_match_euler_grid_by_hand():
    # K = 4: σ = linspace(1, 0.001, 4) = 1, 0.667, 0.334, 0.001, then 0; t = 1 - σ.
    seen, dts = [], []
    x0 = torch.zeros(2, 1)

    def velocity(x, t):
        seen.append(t.clone())
        return torch.ones_like(x)

    out, traj = sample_euler(velocity, x0, steps=4, schedule="flow_match_euler", return_trajectory=True)
    expected_t = [0.0, 0.333, 0.666, 0.999]
    for t, e in zip(seen, expected_t):
        assert t.shape == (2,) and t.dtype == torch.float32
        torch.testing.assert_close(t, torch.full((2,), e), rtol=0, atol=1e-6)
    steps = [float((b - a)[0, 0]) for a, b in zip(traj, traj[1:])]
    assert steps == pytest.approx([0.333, 0.333, 0.333, 0.001], abs=1e-6)
    torch.testing.assert_close(out, torch.ones(2, 1))
    # one step: a single full step at t = 0, as the uniform grid
    seen.clear()
    sample_euler(velocity, x0, steps=1, schedule="flow_match_euler")
    assert seen[0].tolist() == [0.0, 0.0]


def test_flow_match_euler_grid_equals_diffusers_scheduler():
    diffusers = pytest.importorskip("diffusers")
    from latent_pmrf.flow.sampler import time_grid

    for k in (1, 5, 25):
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler()  # shift 1, 1000 training timesteps
        scheduler.set_timesteps(k)
        torch.testing.assert_close(time_grid(k, "flow_match_euler").float(), 1 - scheduler.sigmas.float(),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(scheduler.timesteps.float() / 1000, 1 - time_grid(k, "flow_match_euler")[:-1].float(),
                                   rtol=0, atol=1e-6)


def test_unknown_schedule_rejected():
    with pytest.raises(ValueError, match="flow_match_euler"):
        sample_euler(lambda x, t: x, torch.zeros(1, 1), steps=2, schedule="heun")
