"""`latent-pmrf evaluate` end to end on the real photos: pairing, per-image values, aggregation,
CSV/JSON/markdown, skipped metrics, reference-feature cache, and the PD plot from its CSV."""

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from latent_pmrf.cli.main import main
from latent_pmrf.metrics.distribution import DINOv2Distance, DINOv2Features
from latent_pmrf.metrics.evaluate import evaluate_folders
from latent_pmrf.metrics.results import write_results


@pytest.fixture
def folders(faces_dir, tmp_path):
    """pred = mild blur of 4 GT faces, posterior mean = strong blur, as 128² PNGs/JPEG-free copies."""
    gt, pred, pm = (tmp_path / n for n in ("gt", "pred", "pm"))
    for d in (gt, pred, pm):
        d.mkdir()
    for f in sorted((faces_dir / "hq").glob("*.png"))[:4]:
        img = cv2.resize(cv2.imread(str(f)), (128, 128), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(gt / f.name), img)
        cv2.imwrite(str(pred / f.name), cv2.GaussianBlur(img, (5, 5), 1.2))
        cv2.imwrite(str(pm / f.name), cv2.GaussianBlur(img, (9, 9), 3.0))
    return gt, pred, pm


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float64)


def test_evaluate_cli_writes_csv_json_markdown_and_skips_with_reason(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights"))
    gt, pred, pm = folders
    out = tmp_path / "res" / "results.csv"
    main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--posterior-mean", str(pm), "--metrics",
          "psnr,ssim,ind_rmse,ind_rmse_per_image,lpips_vgg,lpips_alex,musiq", "--out", str(out), "--skip-missing",
          "--label", "blur"])
    rows = list(csv.DictReader(out.open()))
    assert [r["method"] for r in rows] == ["blur"] and rows[0]["images"] == "4"
    per_image = list(csv.DictReader((out.parent / "results.blur.per_image.csv").open()))
    assert [r["file"] for r in per_image] == ["hq_000", "hq_001", "hq_002", "hq_003"]
    # per-image PSNR and both IndRMSEs from the files, independently (NumPy, 0-255, no crop)
    psnrs, mses = [], []
    for r in per_image:
        a, b, c = (read_rgb(d / f"{r['file']}.png") for d in (pred, gt, pm))
        psnrs.append(10 * np.log10(1 / (((a - b) ** 2).mean() / 255.0**2 + 1e-8)))  # BasicSR's epsilon
        mses.append(((a - c) ** 2).mean())
        assert float(r["psnr"]) == pytest.approx(psnrs[-1], abs=1e-6)
    assert float(rows[0]["psnr"]) == pytest.approx(np.mean(psnrs), rel=1e-5)
    assert float(rows[0]["ind_rmse"]) == pytest.approx(np.sqrt(np.mean(mses)), rel=1e-5)  # PMRF's
    assert float(rows[0]["ind_rmse_per_image"]) == pytest.approx(np.mean(np.sqrt(mses)), rel=1e-5)  # Fig. 5's
    assert float(rows[0]["ind_rmse_per_image"]) < float(rows[0]["ind_rmse"])
    report = json.loads(out.with_suffix(".json").read_text())["blur"]
    assert set(report["skipped"]) == {"lpips_vgg", "lpips_alex", "musiq"}
    assert "vgg16-397923af.pth" in report["skipped"]["lpips_vgg"]
    assert "alexnet-owt-7be5be79.pth" in report["skipped"]["lpips_alex"]
    md = out.with_suffix(".md").read_text()
    assert "| blur |" in md and "psnr ↑" in md and "ind_rmse ↓" in md and "musiq_koniq_ckpt" in md

    # a second method adds a row; the PD plot reads the table
    main(["evaluate", "--pred", str(pm), "--gt", str(gt), "--posterior-mean", str(pm), "--metrics",
          "psnr,ssim,ind_rmse", "--out", str(out), "--label", "posterior_mean"])
    rows = list(csv.DictReader(out.open()))
    assert [r["method"] for r in rows] == ["blur", "posterior_mean"]
    assert float(rows[1]["ind_rmse"]) == 0.0 and float(rows[1]["psnr"]) < float(rows[0]["psnr"])
    main(["plot-pd", str(out), "--x", "ind_rmse", "--y", "psnr", "--out", str(tmp_path / "pd.png")])
    assert (tmp_path / "pd.png").stat().st_size > 5000


def test_missing_weights_without_skip_is_an_error_naming_the_file(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights"))
    gt, pred, _ = folders
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr,dists",
              "--out", str(tmp_path / "r.csv")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "DISTS_weights-f5e65c96.pth" in err.replace("\n", "") and "dists" in err


def test_bare_lpips_is_an_error_naming_both_nets(folders, tmp_path, capsys):
    gt, pred, _ = folders
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr,lpips",
              "--out", str(tmp_path / "r.csv")])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "'lpips' is ambiguous" in err and "lpips_alex" in err and "lpips_vgg" in err
    assert not (tmp_path / "r.csv").exists()


def test_unpaired_files_and_missing_gt_are_clear_errors(folders, tmp_path):
    gt, pred, _ = folders
    (pred / "extra.png").write_bytes((gt / "hq_000.png").read_bytes())
    with pytest.raises(FileNotFoundError, match="extra"):
        evaluate_folders(pred, gt, metrics=["psnr"], progress=False)
    with pytest.raises(ValueError, match="psnr needs --gt"):
        evaluate_folders(pred, None, metrics=["psnr"], progress=False)


def test_set_metric_with_untrained_dinov2_and_cached_reference_features(folders, tmp_path):
    import timm

    gt, pred, _ = folders
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224, depth=1, embed_dim=48,
                            num_heads=2).eval()
    extractor = DINOv2Features(model=vit)
    built = {"mmd_dinov2": DINOv2Distance("mmd", extractor), "fd_dinov2": DINOv2Distance("fd", extractor)}
    cache = tmp_path / "features"
    result = evaluate_folders(pred, gt, metrics=["mmd_dinov2", "fd_dinov2", "psnr"], built=built, progress=False,
                              cache_dir=cache, batch_size=3)
    cached = list(cache.glob("dinov2_vitl14_224-4-*.npy"))
    assert len(cached) == 1  # one extractor, one cache file for both metrics
    ref = np.load(cached[0])
    from latent_pmrf.metrics.formulas import mmd_rbf

    pred_feats = np.concatenate([extractor(torch.from_numpy(read_rgb(pred / f"hq_00{i}.png") / 255).permute(2, 0, 1)
                                           [None].float()) for i in range(4)])
    assert result.summary["mmd_dinov2"] == pytest.approx(mmd_rbf(pred_feats, ref), rel=1e-5)
    assert list(result.summary) == ["mmd_dinov2", "fd_dinov2", "psnr"]
    again = evaluate_folders(pred, gt, metrics=["mmd_dinov2"], built=built, progress=False, cache_dir=cache)
    assert again.summary["mmd_dinov2"] == pytest.approx(result.summary["mmd_dinov2"], rel=1e-9)
    paths = write_results(result, tmp_path / "set.csv")
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_evaluate_with_an_existing_label_merges_its_metrics(folders, tmp_path):
    """Issue 17: a second evaluation of the same label adds its metrics to the row (and the
    per-image CSV and JSON) instead of replacing the row and dropping the other columns."""
    gt, pred, pm = folders
    out = tmp_path / "results.csv"
    base = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--label", "blur"]
    main([*base, "--metrics", "psnr"])
    first = list(csv.DictReader(out.open()))[0]
    main([*base, "--metrics", "ssim", "--posterior-mean", str(pm)])
    main([*base[:-2], "--label", "other", "--metrics", "ssim"])
    rows = {r["method"]: r for r in csv.DictReader(out.open())}
    assert rows["blur"]["psnr"] == first["psnr"] and rows["blur"]["ssim"] not in ("", None)
    assert rows["other"]["psnr"] == "" and rows["other"]["ssim"] == rows["blur"]["ssim"]
    per_image = list(csv.DictReader((tmp_path / "results.blur.per_image.csv").open()))
    assert all(r["psnr"] and r["ssim"] for r in per_image)
    assert set(json.loads(out.with_suffix(".json").read_text())["blur"]["summary"]) == {"psnr", "ssim"}
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for f in sorted(pred.glob("*.png"))[:2]:
        (fewer / f.name).write_bytes(f.read_bytes())
    with pytest.raises(SystemExit):  # 2 images against the row's 4: refused, naming the label
        main(["evaluate", "--pred", str(fewer), "--gt", str(gt), "--out", str(out), "--label", "blur",
              "--metrics", "psnr"])
    assert list(csv.DictReader(out.open()))[0]["psnr"] == first["psnr"]
