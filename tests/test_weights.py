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
    rows = check_table()
    for row in rows:
        assert row["key"] in text
    # with an empty cache only files shipped inside installed packages (MTCNN's, the packaged
    # Inception's) are present
    shipped = [r["key"] for r in rows if r["present"] == "yes"]
    assert all(key.startswith(("mtcnn_", "inception_packaged")) for key in shipped), shipped
    assert f"{len(shipped)} of {len(WEIGHT_FILES)} present" in text


def test_release_models_are_registered_with_their_files():
    from latent_pmrf.models.baseline_vaes import BASELINE_VAES

    pmrf = WEIGHT_FILES["pmrf_blind_face"]
    assert (pmrf.filename, pmrf.hf_files) == ("ohayonguy/PMRF_blind_face_image_restoration", ("model.safetensors",))
    assert WEIGHT_FILES["swinir_difface"].how_to_get.endswith("/V1.0/swinir_restoration512_L1.pth")
    for name, (repo, sub) in BASELINE_VAES.items():  # Table 1's baselines, listed by `weights check` too
        assert WEIGHT_FILES[f"vae_{name}"].filename == repo
        assert WEIGHT_FILES[f"vae_{name}"].hf_files[0] == (f"{sub}/config.json" if sub else "config.json")


def _cache_files(tmp_path, repo: str, files: list[str]) -> Path:
    """A Hugging Face cache entry as huggingface_hub writes it: refs/main -> snapshots/<sha>/files."""
    repo_dir = tmp_path / "hf" / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text("abc123")
    for name in files:
        (repo_dir / "snapshots" / "abc123" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo_dir / "snapshots" / "abc123" / name).write_bytes(b"x")
    return repo_dir / "snapshots" / "abc123"


def test_hf_entries_need_all_their_files_in_one_snapshot(empty_torch_home, tmp_path):
    snapshot = _cache_files(tmp_path, "sienna223/Sim-VAE-c32", ["config.json"])
    assert not WEIGHT_FILES["sim_vae_c32"].present()
    with pytest.raises(MissingWeightsError, match=r"diffusion_pytorch_model.*models--sienna223--Sim-VAE-c32"):
        require("sim_vae_c32", "a test")
    (snapshot / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    assert require("sim_vae_c32", "a test") == snapshot
    flux = _cache_files(tmp_path, "black-forest-labs/FLUX.1-dev",
                        ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"])
    assert require("vae_flux", "a test") == flux  # the snapshot root, not its vae/ subfolder


def test_fetch_names_the_files_and_the_cache_folder(empty_torch_home, tmp_path):
    from latent_pmrf.weights import fetch_hf_snapshot

    with pytest.raises(MissingWeightsError) as err:  # HF_HUB_OFFLINE=1 (conftest): the cache only
        fetch_hf_snapshot("someone/missing", ["config.json"], "A test")
    message = str(err.value)
    assert "A test needs config.json of 'someone/missing'" in message
    assert str(tmp_path / "hf" / "models--someone--missing") in message and "huggingface-cli download" in message


def test_every_hint_names_real_flags_and_config_keys():
    """The `needed_by` and `how` text of each pretrained file names only flags the real CLI parser
    has and config keys the training schemas have (issue 17: hints named --fid-reference and
    posterior_mean.source, which never existed)."""
    import re

    from omegaconf import OmegaConf

    from latent_pmrf.cli.main import build_parser
    from latent_pmrf.lightning.tasks import TASKS
    from latent_pmrf.weights import WEIGHT_FILES

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    flags = {opt for sub in subparsers.values() for a in sub._actions for opt in a.option_strings}
    keys = set()
    for task in TASKS.values():
        def walk(node, prefix=""):
            for k, v in node.items():
                keys.add(prefix + k)
                if isinstance(v, dict):
                    walk(v, f"{prefix}{k}.")
        walk(OmegaConf.to_container(OmegaConf.structured(task.schema()), throw_on_missing=False))
    for w in WEIGHT_FILES.values():
        other_tools = r"`(?:huggingface-cli|pip|python -m pip) [^`]*`|with `--local-dir DIR`"
        text = re.sub(other_tools, "", f"{w.needed_by} {w.how_to_get}")
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]+", text):
            assert flag in flags, f"{w.key}: {flag} is not a latent-pmrf flag"
        for key in re.findall(r"\b([a-z_]+(?:\.[a-z_]+)+)=", text):
            assert key in keys, f"{w.key}: {key} is not a config key"
        for command in re.findall(r"^(\w[\w-]*) ", w.needed_by):
            if command in ("evaluate", "restore", "reconstruct", "train"):
                assert command in subparsers
