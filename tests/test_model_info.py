"""`latent-pmrf model-info`: Table 4's parameter counts as a command."""

import json

import pytest

from latent_pmrf.analysis.model_info import all_presets, model_info
from latent_pmrf.cli.main import main


def _json(capsys, *argv) -> dict:
    main(["model-info", *argv, "--json"])
    return json.loads(capsys.readouterr().out)


def test_official_velocity_net_is_table4s_151_2m(capsys):
    info = _json(capsys, "latent_pmrf_official")
    assert {"preset", "parameters", "trainable_parameters", "gflops"} <= set(info)
    assert isinstance(info["parameters"], int) and isinstance(info["trainable_parameters"], int)
    assert abs(info["trainable_parameters"] - 151.2e6) <= 0.05e6
    assert info["input_shape"] == [1, 32, 64, 64] and info["gflops"] > 0


def test_sim_vae_c32_count_equals_the_official_state_dict(capsys, reference_dir):
    expected = sum(_numel(shape) for shape in _official_shapes(reference_dir).values())
    assert _json(capsys, "sim_vae_c32")["parameters"] == expected == 91_030_595


def test_frozen_parts_of_table4_sum_to_106_8m():
    # Table 4, Latent-PMRF: 151.2 + 106.8 M, the frozen part being Sim-VAE c32 and DifFace's SwinIR.
    frozen = model_info("sim_vae_c32").parameters + model_info("swinir_difface512").parameters
    assert round(frozen / 1e6, 1) == 106.8


def test_conv_only_vae_flops_scale_with_pixels():
    small, large = model_info("sim_vae_c32", 256).gflops, model_info("sim_vae_c32", 512).gflops
    assert large == pytest.approx(4 * small, rel=1e-9)


def test_every_preset_reports(capsys):
    for preset in all_presets():
        assert model_info(preset, 256).parameters > 0
    main(["model-info", "hdit_latent_pmrf"])
    assert "M parameters" in capsys.readouterr().err


def test_unknown_preset_and_bad_resolution_are_clear_errors(capsys):
    with pytest.raises(SystemExit) as err:
        main(["model-info", "hdit_xl"])
    assert err.value.code == 2 and "hdit_xl" in capsys.readouterr().err
    with pytest.raises(ValueError, match="multiple of 64"):
        model_info("sim_vae_c32", 100)


def _official_shapes(reference_dir) -> dict:
    data = json.loads((reference_dir / "official_c32_keys.json").read_text())
    return {key: shape for key, shape in data["state_dict"]}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
