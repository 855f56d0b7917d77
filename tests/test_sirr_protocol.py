"""The SIRR evaluation protocol against an independent computation: PIL's default resize to the floor
multiple of 32 and a loop over RGB channels with scikit-image's metrics (what DSRNet/RDNet's
``util/index.py`` calls), per-set means and the image-weighted average; the CLI and its CSV."""

import csv

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from latent_pmrf.cli.main import EVALUATE_PROTOCOLS, main
from latent_pmrf.data.image_io import ImageReadError
from latent_pmrf.data.sirr_datasets import REAL20_STEMS, SIRR_TEST_SETS
from latent_pmrf.metrics.evaluate import PROTOCOLS
from latent_pmrf.metrics.sirr import evaluate_sirr, sirr_psnr_ssim


def reference_scores(pred_path, gt_path):
    gt = Image.open(gt_path).convert("RGB")
    gt = gt.resize((gt.width // 32 * 32, gt.height // 32 * 32))  # PIL's default filter
    pred = Image.open(pred_path).convert("RGB")
    if pred.size != gt.size:
        pred = pred.resize(gt.size)
    x, y = np.asarray(pred), np.asarray(gt)
    psnr = [peak_signal_noise_ratio(y[..., c], x[..., c], data_range=255) for c in range(3)]
    ssim = [structural_similarity(y[..., c], x[..., c], data_range=255) for c in range(3)]
    return float(np.mean(psnr)), float(np.mean(ssim))


def test_psnr_ssim_equal_a_per_channel_loop():
    rng = np.random.default_rng(0)
    gt = data.astronaut()[:96, :128]
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    pred[..., 2] = gt[..., 2] // 2 + 60  # channels far apart: a mean over channels, not a joint MSE
    psnr, ssim = sirr_psnr_ssim(pred, gt)
    assert psnr == pytest.approx(np.mean([peak_signal_noise_ratio(gt[..., c], pred[..., c], data_range=255)
                                          for c in range(3)]), abs=1e-10)
    assert ssim == pytest.approx(np.mean([structural_similarity(gt[..., c], pred[..., c], data_range=255)
                                          for c in range(3)]), abs=1e-12)
    joint = 10 * np.log10(255**2 / ((gt.astype(float) - pred) ** 2).mean())
    assert abs(psnr - joint) > 0.5


def save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


@pytest.fixture
def benchmark(tmp_path):
    """A test root with Real20 (its 20 names, plus one extra image), two SIR² subsets and Nature;
    predictions = the blended images (as a method that does nothing), some at the aligned size."""
    gt_root, pred_root = tmp_path / "test", tmp_path / "pred"
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    layout = {"real20_420": [*REAL20_STEMS, "999"], "SIR2/SolidObjectDataset": ["o1", "o2", "o3"],
              "SIR2/WildSceneDataset": ["w1", "w2"], "Nature": ["n1", "n2"]}
    rng = np.random.default_rng(1)
    for k, (folder, names) in enumerate(layout.items()):
        for i, name in enumerate(names):
            h, w = 40 + 7 * ((i + k) % 4), 70 + 11 * (i % 3)  # not multiples of 32
            top, left = rng.integers(0, 250, 2)
            transmission = photos[(i + k) % 4][top : top + h, left : left + w]
            reflection = photos[(i + k + 1) % 4][left : left + h, top : top + w]
            blended = np.clip(transmission * 0.8 + reflection * 0.35, 0, 255).astype(np.uint8)
            save(gt_root / folder / "transmission_layer" / f"{name}.png", transmission)
            save(gt_root / folder / "blended" / f"{name}.png", blended)
            prediction = Image.fromarray(blended)
            if i % 2:  # the input aligned first, as the protocol feeds the network
                prediction = prediction.resize((w // 32 * 32, h // 32 * 32))
            out = pred_root / folder / ("restored" if folder == "Nature" else "") / f"{name}.png"
            save(out, np.asarray(prediction))
    return gt_root, pred_root, layout


def test_benchmark_means_equal_an_independent_computation(benchmark):
    gt_root, pred_root, layout = benchmark
    result = evaluate_sirr(pred_root, gt_root, label="identity", progress=False)
    scores = {}
    for folder, names in layout.items():
        for name in names:
            if name == "999":
                continue  # not one of Real20's listed names
            found = next((pred_root / folder).rglob(f"{name}.png"))
            scores[(folder, name)] = reference_scores(found, gt_root / folder / "transmission_layer" / f"{name}.png")
    assert result.meta["images"] == 27 and result.meta["protocol"] == "sirr"
    by_set = {"real20": ["real20_420"], "sir2_objects": ["SIR2/SolidObjectDataset"],
              "sir2_wild": ["SIR2/WildSceneDataset"], "nature": ["Nature"],
              "sir2": ["SIR2/SolidObjectDataset", "SIR2/WildSceneDataset"]}
    for name, folders in by_set.items():
        values = np.array([v for (f, _), v in scores.items() if f in folders])
        assert result.summary[f"{name}/psnr"] == pytest.approx(values[:, 0].mean(), abs=1e-9), name
        assert result.summary[f"{name}/ssim"] == pytest.approx(values[:, 1].mean(), abs=1e-12), name
    everything = np.array(list(scores.values()))
    assert result.summary["psnr"] == pytest.approx(everything[:, 0].mean(), abs=1e-9)  # image-weighted
    assert result.summary["ssim"] == pytest.approx(everything[:, 1].mean(), abs=1e-12)
    weighted = (20 * result.summary["real20/psnr"] + 5 * result.summary["sir2/psnr"]
                + 2 * result.summary["nature/psnr"]) / 27
    assert result.summary["psnr"] == pytest.approx(weighted, abs=1e-9)
    assert "sir2_postcard/psnr" not in result.summary


def test_cli_writes_psnr_ssim_with_the_protocol(benchmark, tmp_path, capsys):
    gt_root, pred_root, _ = benchmark
    out = tmp_path / "results.csv"
    main(["evaluate", "--protocol", "sirr", "--pred", str(pred_root), "--gt", str(gt_root), "--label", "identity",
          "--out", str(out)])
    folder = gt_root / "SIR2" / "WildSceneDataset"
    main(["evaluate", "--pred", str(folder / "blended"), "--gt", str(folder / "transmission_layer"),
          "--metrics", "psnr", "--label", "default_one", "--out", str(out)])
    rows = {r["method"]: r for r in csv.DictReader(out.open())}
    assert rows["identity"]["protocol"] == "sirr" and rows["default_one"]["protocol"] == "default"
    assert rows["identity"]["images"] == "27" and float(rows["identity"]["psnr"]) > 5
    assert {"real20/psnr", "sir2/ssim", "nature/ssim"} <= set(rows["identity"])
    header = out.read_text().splitlines()[0].split(",")
    assert header[:3] == ["method", "psnr", "ssim"] and header[-2:] == ["protocol", "images"]
    assert "real20/psnr ↑" in out.with_suffix(".md").read_text()

    # one pair folder: predictions matched by name in --pred
    single = evaluate_sirr(pred_root / "SIR2/WildSceneDataset", folder, progress=False)
    assert single.meta["images"] == 2 and set(single.summary) == {"psnr", "ssim"}


def test_errors_name_what_is_missing(benchmark, tmp_path, capsys):
    gt_root, pred_root, _ = benchmark
    (pred_root / "SIR2/WildSceneDataset/w2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"WildSceneDataset.*w2"):
        evaluate_sirr(pred_root, gt_root, progress=False)
    with pytest.raises(FileNotFoundError, match="neither a pair folder"):
        evaluate_sirr(pred_root, tmp_path / "pred", progress=False)
    with pytest.raises(SystemExit):
        main(["evaluate", "--protocol", "sirr", "--pred", str(pred_root), "--gt", str(gt_root), "--metrics",
              "psnr,lpips_alex", "--out", str(tmp_path / "r.csv")])
    assert "psnr and ssim only" in capsys.readouterr().err


def test_protocol_table_and_benchmark_counts():
    assert EVALUATE_PROTOCOLS == tuple(PROTOCOLS)
    assert {s.name: s.count for s in SIRR_TEST_SETS} == {"real20": 20, "sir2_objects": 200, "sir2_postcard": 199,
                                                         "sir2_wild": 55, "nature": 20}
    assert sum(s.count for s in SIRR_TEST_SETS) == 494
    assert sum(s.count for s in SIRR_TEST_SETS if s.group == "sir2") == 454


def test_an_unreadable_prediction_is_named_left_out_and_exits_3(benchmark, tmp_path, capsys):
    """As `evaluate` does for the default protocol: the library refuses, the CLI evaluates the
    readable pairs (equal to the clean subset), names the file, counts the images and exits 3."""
    gt_root, pred_root, _ = benchmark
    broken = pred_root / "SIR2/SolidObjectDataset/o2.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="o2.png"):
        evaluate_sirr(pred_root, gt_root, progress=False)
    out = tmp_path / "results.csv"
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--protocol", "sirr", "--pred", str(pred_root), "--gt", str(gt_root), "--label", "partial",
              "--out", str(out)])
    assert exit_.value.code == 3
    printed = capsys.readouterr()
    assert str(broken) in " ".join((printed.out + printed.err).split())
    row = next(csv.DictReader(out.open()))
    assert row["images"] == "26"
    # the other sets are untouched; SolidObjectDataset's mean is that of its two readable pairs
    solid = tmp_path / "solid"
    for name in ("o1", "o3"):
        for side in ("transmission_layer", "blended"):
            save(solid / side / f"{name}.png", np.asarray(Image.open(gt_root / "SIR2/SolidObjectDataset" / side / f"{name}.png")))
    clean = evaluate_sirr(pred_root / "SIR2/SolidObjectDataset", solid, progress=False)
    assert float(row["sir2_objects/psnr"]) == pytest.approx(clean.summary["psnr"], abs=1e-4)  # the CSV has 4 decimals
