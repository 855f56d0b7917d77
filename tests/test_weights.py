"""The pretrained-file registry: every file the issue lists, where its library looks, the
missing-file message, and `latent-pmrf weights check`."""

from pathlib import Path

import pytest

from latent_pmrf.cli.main import main
from latent_pmrf.weights import WEIGHT_FILES, MissingWeightsError, check_table, require


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "torch"


def test_registry_lists_every_network_the_issue_names():
    expected = {"vgg19": "vgg19-dcbb9e9d.pth", "vgg16": "vgg16-397923af.pth", "alexnet": "alexnet-owt-7be5be79.pth",
                "dists": "DISTS_weights-f5e65c96.pth", "inception": "inception-2015-12-05.pt",
                "dinov2": "dinov2_vitl14_pretrain.pth", "musiq": "musiq_koniq_ckpt-e95806b9.pth",
                "clip_rn50": "RN50.pt", "qalign": "q-future/one-align", "arcface": "resnet18_110.pth",
                "fan": "alignment_WFLW_4HG.pth", "sim_vae_c32": "sienna223/Sim-VAE-c32",
                "swinir_difface": "swinir_restoration512_L1.pth"}
    for key, filename in expected.items():
        assert WEIGHT_FILES[key].filename == filename


def test_paths_follow_each_library_cache(empty_torch_home, tmp_path):
    assert WEIGHT_FILES["dinov2"].path == empty_torch_home / "hub" / "checkpoints" / "dinov2_vitl14_pretrain.pth"
    assert WEIGHT_FILES["musiq"].path == empty_torch_home / "hub" / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth"
    assert WEIGHT_FILES["clip_rn50"].path == empty_torch_home / "hub" / "clip" / "RN50.pt"
    assert WEIGHT_FILES["qalign"].path == tmp_path / "hf" / "models--q-future--one-align"
    import pyiqa.utils.download_util as pyiqa_dl
    import torch

    assert Path(pyiqa_dl.DEFAULT_CACHE_DIR).name == "pyiqa"  # pyiqa's cache is <torch hub>/pyiqa
    assert Path(torch.hub.get_dir()) == empty_torch_home / "hub"


def test_missing_file_message_names_file_folder_and_user(empty_torch_home):
    with pytest.raises(MissingWeightsError) as err:
        require("arcface", "Deg (ArcFace identity angle)")
    msg = str(err.value)
    assert "resnet18_110.pth" in msg and str(empty_torch_home / "hub" / "checkpoints") in msg
    assert "Deg (ArcFace identity angle)" in msg and "VQFR" in msg


def test_present_after_the_file_is_put_there(empty_torch_home, tmp_path):
    path = WEIGHT_FILES["fan"].path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert require("fan", "LMD") == path
    snapshot = tmp_path / "hf" / "models--q-future--one-align" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert WEIGHT_FILES["qalign"].present()


def test_weights_check_command(empty_torch_home, capsys):
    main(["weights", "check"])
    out = capsys.readouterr()
    text = out.out + out.err
    for row in check_table():
        assert row["key"] in text
    assert f"0 of {len(WEIGHT_FILES)} present" in text
