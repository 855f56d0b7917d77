"""data_prep scripts on tiny folders built from shared/data/faces: outputs, manifest hashes,
resuming, dry runs, bad inputs, determinism across worker counts, the Q-Align weight check."""

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data_prep import celeba_test, common, ffhq, lsdir, sirr
from data_prep.common import DataPrepError, Manifest

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ helpers
def load_face(faces_dir: Path, i: int) -> np.ndarray:
    return np.asarray(Image.open(faces_dir / "hq" / f"hq_{i:03d}.png").convert("RGB"))


def save(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint8 and image.ndim == 3, path
    return image[..., ::-1]


def manifest_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / common.MANIFEST_NAME, newline="") as handle:
        rows = list(csv.DictReader(handle))
    paths = [row["path"] for row in rows]
    assert paths == sorted(set(paths)), "compacted manifest: sorted, one row per path"
    return {row["path"]: row for row in rows}


def check_files_match_manifest(out: Path, rows: dict[str, dict[str, str]]) -> None:
    for path, row in rows.items():
        data = (out / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"], path
        height, width = read_rgb(out / path).shape[:2]
        assert (int(row["width"]), int(row["height"])) == (width, height), path


def mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.png")}


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


# ------------------------------------------------------------------------------ command line
@pytest.mark.parametrize("script", [ffhq, lsdir, celeba_test, sirr])
def test_help_describes_the_script(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = flat(capsys.readouterr().out)
    assert f"python -m data_prep.{script.__name__.split('.')[-1]}" in text and "--dry-run" in text


def test_celeba_test_help_says_published_numbers_use_the_released_set(capsys):
    with pytest.raises(SystemExit):
        celeba_test.main(["--help"])
    assert "released CelebA-Test" in flat(capsys.readouterr().out)


def test_output_folder_inside_the_input_is_refused(faces_dir, tmp_path):
    save(load_face(faces_dir, 0), tmp_path / "in" / "a.png")
    with pytest.raises(DataPrepError, match="inside the input folder"):
        ffhq.main(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "in" / "out")])


# ------------------------------------------------------------------------------ ffhq
def test_ffhq_resize_limit_resume_dry_run_and_bad_input(faces_dir, tmp_path, capsys):
    src, out = tmp_path / "ffhq1024", tmp_path / "ffhq512"
    originals = [load_face(faces_dir, i) for i in range(3)]
    for i, face in enumerate(originals):  # the release's layout: 00000/00000.png ...
        big = np.asarray(Image.fromarray(face).resize((1024, 1024), Image.Resampling.BICUBIC))
        save(big, src / "00000" / f"{i:05d}.png")
    (src / "00000" / "00003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    summary = ffhq.main(["--input", str(src), "--out", str(out), "--dry-run"])
    assert (summary.total, summary.done_before, summary.to_do) == (4, 0, 4)
    assert "4 inputs, 0 already done, 4 to do" in flat(capsys.readouterr().out)
    assert not out.exists()

    summary = ffhq.main(["--input", str(src), "--out", str(out), "--workers", "0", "--limit", "2"])
    assert (summary.written, summary.failed) == (2, 0)
    summary = ffhq.main(["--input", str(src), "--out", str(out), "--workers", "2"])
    assert (summary.total, summary.done_before, summary.written, summary.failed) == (4, 2, 1, 1)
    assert "00003.png" in summary.failures[0]
    assert "00003.png" in flat(capsys.readouterr().out)

    rows = manifest_rows(out)
    assert sorted(rows) == ["00000.png", "00001.png", "00002.png"]  # flat, names kept
    assert [rows[p]["source"] for p in sorted(rows)] == [f"00000/{i:05d}.png" for i in range(3)]
    check_files_match_manifest(out, rows)
    for i, face in enumerate(originals):  # 512 -> 1024 -> 512 comes back close to the face
        restored = read_rgb(out / f"{i:05d}.png").astype(np.float64)
        assert restored.shape == (512, 512, 3)
        assert np.abs(restored - face).mean() < 2.0

    before = mtimes(out)
    (out / ".00001.png.tmp-99999").write_bytes(b"left by a killed run")
    summary = ffhq.main(["--input", str(src), "--out", str(out), "--workers", "0"])
    assert (summary.done_before, summary.written, summary.failed) == (3, 0, 1)
    assert mtimes(out) == before and not (out / ".00001.png.tmp-99999").exists()

    # an output lost, and a row lost (as a killed run can leave): both are redone
    (out / "00001.png").unlink()
    lines = (out / common.MANIFEST_NAME).read_text().splitlines(keepends=True)
    (out / common.MANIFEST_NAME).write_text("".join(line for line in lines if not line.startswith("00002.png")))
    summary = ffhq.main(["--input", str(src), "--out", str(out), "--workers", "0", "--dry-run"])
    assert (summary.done_before, summary.to_do) == (1, 3)
    summary = ffhq.main(["--input", str(src), "--out", str(out), "--workers", "0"])
    assert (summary.done_before, summary.written, summary.failed) == (1, 2, 1)
    check_files_match_manifest(out, manifest_rows(out))


def test_ffhq_refuses_non_square_and_folder_with_other_settings(faces_dir, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    save(load_face(faces_dir, 0)[:, :400], src / "wide.png")
    summary = ffhq.main(["--input", str(src), "--out", str(out), "--workers", "0"])
    assert summary.failed == 1 and "square" in summary.failures[0] and "wide.png" in summary.failures[0]
    stamp = json.loads((out / common.SETTINGS_NAME).read_text())
    (out / common.SETTINGS_NAME).write_text(json.dumps(stamp | {"size": 256}))
    with pytest.raises(DataPrepError, match="size"):
        ffhq.main(["--input", str(src), "--out", str(out)])


# ------------------------------------------------------------------------------ celeba_test
def test_celeba_test_pairs_are_deterministic_across_workers(faces_dir, tmp_path):
    src = tmp_path / "celeba_hq"
    for i in range(3):
        save(load_face(faces_dir, i), src / f"{i}.png")
    big = np.asarray(Image.fromarray(load_face(faces_dir, 3)).resize((1024, 1024), Image.Resampling.BICUBIC))
    save(big, src / "10.png")  # sorted order: 0, 1, 10, 2
    out_a, out_b = tmp_path / "a", tmp_path / "b"

    summary = celeba_test.main(["--input", str(src), "--out", str(out_a), "--workers", "0"])
    assert (summary.written, summary.files, summary.failed) == (4, 8, 0)
    celeba_test.main(["--input", str(src), "--out", str(out_b), "--workers", "2"])
    for path in sorted(out_a.rglob("*.png")):
        assert path.read_bytes() == (out_b / path.relative_to(out_a)).read_bytes(), path
    assert (out_a / common.MANIFEST_NAME).read_bytes() == (out_b / common.MANIFEST_NAME).read_bytes()

    rows = manifest_rows(out_a)
    names = ["0.png", "1.png", "10.png", "2.png"]
    assert sorted(rows) == [f"{kind}/{name}" for kind in ("hq", "lq") for name in names]
    check_files_match_manifest(out_a, rows)
    for index, name in enumerate(names):
        hq, lq = read_rgb(out_a / "hq" / name), read_rgb(out_a / "lq" / name)
        assert hq.shape == lq.shape == (512, 512, 3)
        if name != "10.png":  # a 512 input is the HQ as is: no flip, no gray
            assert np.array_equal(hq, load_face(faces_dir, int(name[0])))
        row = rows[f"lq/{name}"]
        assert (int(row["index"]), int(row["seed"])) == (index, 0)
        assert 0.1 <= float(row["sigma_x"]) <= 15 and 0.8 <= float(row["scale"]) <= 32
        assert 30 <= int(row["jpeg_quality"]) <= 100 and 0 <= float(row["noise_std"]) <= 20 / 255
        assert np.abs(hq.astype(float) - lq).mean() > 1.0  # degraded

    summary = celeba_test.main(["--input", str(src), "--out", str(out_a), "--num", "2", "--workers", "0"])
    assert (summary.total, summary.done_before, summary.written) == (2, 2, 0)
    with pytest.raises(DataPrepError, match="seed"):
        celeba_test.main(["--input", str(src), "--out", str(out_a), "--seed", "1"])
    summary = celeba_test.main(["--input", str(src), "--out", str(tmp_path / "c"), "--seed", "1", "--num", "1",
                                "--workers", "0"])
    assert (tmp_path / "c" / "lq" / "0.png").read_bytes() != (out_a / "lq" / "0.png").read_bytes()


# ------------------------------------------------------------------------------ lsdir
@pytest.mark.parametrize("length, expected", [(1000, [0, 384, 488]), (896, [0, 384]), (700, [0, 188]),
                                              (512, [0]), (511, [])])
def test_crop_positions_cover_the_side_like_basicsr(length, expected):
    assert lsdir.crop_positions(length, 512, 384) == expected


CROP_POSITIONS = [(0, 0), (0, 188), (88, 0), (88, 188)]  # 600 x 700 inputs: rows 0, 88; columns 0, 188


@pytest.fixture
def lsdir_input(faces_dir, tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    a, b = load_face(faces_dir, 0), load_face(faces_dir, 1)
    mosaic = np.concatenate([np.concatenate([a, b], 1), np.concatenate([b, a], 1)], 0)  # 1024 x 1024
    src = tmp_path / "lsdir"
    images = {"0001000/0000001.png": mosaic[:600, :700], "0001000/0000002.png": mosaic[300:900, 200:900]}
    for key, image in images.items():
        save(np.ascontiguousarray(image), src / key)
    save(a[:400, :300], src / "0002000/small.png")
    (src / "0002000" / "broken.png").write_bytes(b"")
    return src, images


def test_lsdir_crops_without_filter_resume_and_dry_run(lsdir_input, tmp_path):
    src, images = lsdir_input
    out = tmp_path / "crops"
    summary = lsdir.main(["--input", str(src), "--out", str(out), "--skip-filter", "--dry-run"])
    assert (summary.total, summary.to_do) == (4, 4) and not out.exists()

    summary = lsdir.main(["--input", str(src), "--out", str(out), "--skip-filter", "--workers", "2"])
    assert (summary.written, summary.files, summary.skipped, summary.failed) == (2, 8, 1, 1)
    assert "broken.png" in summary.failures[0]
    rows = manifest_rows(out)
    check_files_match_manifest(out, rows)
    for key, image in images.items():
        stem = key[: -len(".png")]
        for number, (top, left) in enumerate(CROP_POSITIONS, start=1):
            row = rows[f"{stem}_s{number:03d}.png"]
            assert (int(row["top"]), int(row["left"]), row["num_crops"], row["qalign"], row["kept"]) == (
                top, left, "4", "", "1")
            assert row["source"] == key
            assert np.array_equal(read_rgb(out / row["path"]), image[top : top + 512, left : left + 512])

    before = mtimes(out)
    summary = lsdir.main(["--input", str(src), "--out", str(out), "--skip-filter", "--workers", "0"])
    assert (summary.done_before, summary.written, summary.skipped, summary.failed) == (2, 0, 1, 1)
    assert mtimes(out) == before
    summary = lsdir.main(["--input", str(src), "--out", str(out), "--dry-run"])
    assert (summary.done_before, summary.crops_unscored) == (2, 8)


def test_lsdir_filter_deletes_low_scores_and_keeps_their_rows(lsdir_input, tmp_path, monkeypatch):
    src, images = lsdir_input
    out = tmp_path / "crops"
    brightness = {f"{key[: -len('.png')]}_s{number:03d}.png": image[top : top + 512, left : left + 512].mean() / 255
                  for key, image in images.items() for number, (top, left) in enumerate(CROP_POSITIONS, start=1)}
    threshold = float(np.median(list(brightness.values())))  # 4 crops above, 4 below
    monkeypatch.setattr(lsdir, "qalign_snapshot", lambda: None)  # a stand-in scorer: mean brightness
    monkeypatch.setattr(lsdir, "check_qalign_code", lambda: None)
    monkeypatch.setattr(lsdir, "load_qalign", lambda device: lambda image: float(image.mean()))
    args = ["--input", str(src), "--out", str(out), "--min-score", str(threshold), "--workers", "0"]
    summary = lsdir.main(args)
    assert (summary.written, summary.crops_scored, summary.crops_kept, summary.crops_rejected) == (2, 8, 4, 4)
    rows = manifest_rows(out)
    assert sorted(rows) == sorted(brightness)
    for path, row in rows.items():
        keep = brightness[path] >= threshold
        assert float(row["qalign"]) == pytest.approx(brightness[path], abs=1e-5)
        assert row["kept"] == str(int(keep)) and (out / path).is_file() == keep
    check_files_match_manifest(out, {path: row for path, row in rows.items() if row["kept"] == "1"})

    def no_model(device):
        raise AssertionError("Q-Align loaded with nothing to score")

    monkeypatch.setattr(lsdir, "load_qalign", no_model)  # rejected crops stay rejected: nothing to redo
    summary = lsdir.main(args)
    assert (summary.done_before, summary.written, summary.crops_scored) == (2, 0, 0)


def test_lsdir_without_qalign_weights_stops_before_any_work(lsdir_input, tmp_path):
    src, _ = lsdir_input
    out, hf_home = tmp_path / "crops", tmp_path / "empty_hf_home"
    hf_home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env |= {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "data_prep.lsdir", "--input", str(src), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "q-future/one-align" in done.stderr and str(hf_home / "hub") in done.stderr
    assert "--skip-filter" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_qalign_snapshot_names_missing_files(tmp_path):
    with pytest.raises(DataPrepError, match="no snapshot of q-future/one-align"):
        lsdir.qalign_snapshot(tmp_path)
    snapshot = tmp_path / "models--q-future--one-align" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text("{}")
    shards = {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}
    (snapshot / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": shards}))
    (snapshot / shards["a"]).write_bytes(b"0")
    with pytest.raises(DataPrepError) as error:
        lsdir.qalign_snapshot(tmp_path)
    for missing in ("pytorch_model-00002-of-00002.bin", "preprocessor_config.json", "tokenizer.model"):
        assert missing in str(error.value)
    for name in (shards["b"], "preprocessor_config.json", "tokenizer.model"):
        (snapshot / name).write_bytes(b"0")
    assert lsdir.qalign_snapshot(tmp_path) == snapshot


# ------------------------------------------------------------------------------ manifest
def test_manifest_drops_a_torn_line_and_keeps_the_last_row_of_a_path(tmp_path):
    path = tmp_path / "manifest.csv"
    columns = ("path", "sha256", "width", "height", "source")
    path.write_text("path,sha256,width,height,source\nb.png,1,2,2,x\na.png,2,2,2,y\nb.png,3,4,4,z\nc.png,9")
    manifest = Manifest.load(path, columns)
    assert len(manifest) == 2 and "c.png" not in manifest and manifest.row("b.png")["sha256"] == "3"
    with manifest:
        manifest.append([dict(path="c.png", sha256="5", width=1, height=1, source="w")])
    assert path.read_text() == "path,sha256,width,height,source\na.png,2,2,2,y\nb.png,3,4,4,z\nc.png,5,1,1,w\n"
    with pytest.raises(DataPrepError, match="columns"):
        Manifest.load(path, (*columns, "extra"))


# ------------------------------------------------------------------------------ sirr
@pytest.fixture
def sirr_tree(tmp_path, monkeypatch):
    """A SIRR data root with the real layout and tiny counts (the table's counts patched to match):
    Real20 keeps its listed names (2 here) and holds one more pair; one blended image is a JPEG."""
    from dataclasses import replace

    counts = {"real20": 2, "sir2_objects": 2, "sir2_postcard": 1, "sir2_wild": 1, "nature": 1}
    tests = tuple(replace(s, count=counts[s.name], names=("3", "4") if s.names else None) for s in sirr.SIRR_TEST_SETS)
    trains = tuple(replace(s, count=2) for s in sirr.SIRR_TRAIN_PAIR_SETS)
    monkeypatch.setattr(sirr, "SIRR_TEST_SETS", tests)
    monkeypatch.setattr(sirr, "SIRR_TRAIN_PAIR_SETS", trains)
    monkeypatch.setattr(sirr, "VOC_TRAIN_COUNT", 3)
    root, rng = tmp_path / "download", np.random.default_rng(0)
    for s in (*tests, *trains):
        names = ["3", "4", "5"] if s.names else [f"{s.name}_{i}" for i in range(s.count)]
        for name in names:
            for folder in ("blended", "transmission_layer"):
                suffix = ".jpg" if (name, folder) == ("3", "blended") else ".png"
                save(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), root / s.path / folder / f"{name}{suffix}")
    for i in range(4):
        save(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8), root / sirr.VOC_TRAIN_DIR / f"2008_{i:06d}.png")
    voc_list = tmp_path / "VOC2012_224_train_png.txt"
    voc_list.write_text("2008_000000.png\n2008_000002.png\n2008_000003.png\n")
    return root, voc_list


def test_sirr_arranges_the_layout_with_counts_checked(sirr_tree, tmp_path):
    root, voc_list = sirr_tree
    out = tmp_path / "sirr"
    args = ["--input", str(root), "--out", str(out), "--workers", "0", "--voc-list", str(voc_list)]
    summary = sirr.main([*args, "--dry-run"])
    assert summary.to_do == 2 * (2 + 2 + 1 + 1 + 1) + 2 * (2 + 2) + 3 and not out.exists()
    summary = sirr.main(args)
    assert summary.written == summary.total == 25 and summary.failed == 0
    rows = manifest_rows(out)
    check_files_match_manifest(out, rows)
    assert "test/real20_420/blended/3.png" in rows and "test/real20_420/blended/5.png" not in rows  # Real20's names
    assert rows["test/real20_420/blended/3.png"]["source"] == "test/real20_420/blended/3.jpg"
    assert rows["test/Nature/blended/nature_0.png"]["set"] == "test/nature"
    assert rows["train/nature/transmission_layer/nature_1.png"]["set"] == "train/nature"
    voc = sorted(p for p in rows if p.startswith(sirr.VOC_TRAIN_DIR))
    assert [p.rsplit("/", 1)[1] for p in voc] == ["2008_000000.png", "2008_000002.png", "2008_000003.png"]
    assert all(rows[p]["set"] == "train/voc" for p in voc)
    png = read_rgb(out / "test/SIR2/PostcardDataset/transmission_layer/sir2_postcard_0.png")
    assert np.array_equal(png, np.asarray(Image.open(root / "test/SIR2/PostcardDataset/transmission_layer/"
                                                     "sir2_postcard_0.png")))
    assert sirr.main(args).done_before == 25


def test_sirr_counts_and_pairs_are_checked_with_the_folder_named(sirr_tree, tmp_path):
    root, voc_list = sirr_tree
    args = ["--input", str(root), "--out", str(tmp_path / "out"), "--workers", "0", "--dry-run"]
    (root / "test/SIR2/SolidObjectDataset/blended/sir2_objects_1.png").rename(
        root / "test/SIR2/SolidObjectDataset/blended/other.png")
    with pytest.raises(DataPrepError, match=r"SolidObjectDataset: 2 image\(s\) are in only one of .*expected 2 pairs"):
        sirr.main([*args, "--part", "test"])
    (root / "test/SIR2/SolidObjectDataset/blended/other.png").unlink()
    (root / "test/SIR2/SolidObjectDataset/transmission_layer/sir2_objects_1.png").unlink()
    with pytest.raises(DataPrepError, match=r"SIR2/SolidObjectDataset: 1 pairs, expected 2"):
        sirr.main([*args, "--part", "test"])
    with pytest.raises(DataPrepError, match=r"PNGImages: 4 images, expected 3 .*--voc-list"):
        sirr.main([*args, "--part", "train"])
    (root / sirr.VOC_TRAIN_DIR / "2008_000002.png").unlink()
    with pytest.raises(DataPrepError, match=r"1 of the 3 files .* missing, e.g. 2008_000002.png"):
        sirr.main([*args, "--part", "train", "--voc-list", str(voc_list)])
    (root / "train/real").rename(root / "train/real_elsewhere")
    with pytest.raises(DataPrepError, match=r"train/real has no blended/ .*expected 2 pairs"):
        sirr.main([*args, "--part", "train", "--voc-list", str(voc_list)])


def test_sirr_real_counts_are_the_benchmarks():
    counts = {s.path: s.count for s in (*sirr.SIRR_TEST_SETS, *sirr.SIRR_TRAIN_PAIR_SETS)}
    assert counts == {"test/real20_420": 20, "test/SIR2/SolidObjectDataset": 200, "test/SIR2/PostcardDataset": 199,
                      "test/SIR2/WildSceneDataset": 55, "test/Nature": 20, "train/real": 90, "train/nature": 200}
    assert sirr.VOC_TRAIN_COUNT // 2 == 7643
