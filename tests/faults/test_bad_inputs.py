"""Bad input everywhere (issue 14): images of every awkward kind handed to `restore`, `reconstruct`
and `evaluate`, existing and unwritable outputs, and files that are not what `--ckpt` / `--vae`
expect. Every readable image is processed (converted as documented), every other one is named in
one line, the exit code is 3 when anything was skipped and 2 when nothing could start."""

import csv
import io
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from test_checkpoints_and_nonfinite import tiny_vae_run
from test_restoration_training import ROOT, TINY_SWINIR, data_overrides
from test_restore_user_path import pipeline_dir  # noqa: F401  (a fixture: a tiny pixel-space pipeline folder)

from latent_pmrf.analysis.run_logs import last_checkpoint
from latent_pmrf.cli.main import main
from latent_pmrf.flow import RestorationPipeline
from latent_pmrf.lightning.tasks import TASKS, load_task_config, train
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig

READABLE = {"cmyk.jpg": (24, 20), "gray16.png": (24, 20), "rgba.png": (17, 9), "palette.png": (24, 20),
            "gray.png": (13, 21), "one_pixel.png": (1, 1)}  # (W, H) as PIL
UNREADABLE = ("empty.png", "truncated.png", "text.jpg", "huge.png")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (8-bit RGB) followed by a few bytes of pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def noise(size, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def write_awkward_images(folder):
    """READABLE: CMYK JPEG, 16-bit gray, RGBA, palette, 8-bit gray, 1x1; UNREADABLE: zero bytes, a
    PNG cut in half, text named .jpg, a header claiming 20000x20000."""
    folder.mkdir(parents=True, exist_ok=True)
    noise(READABLE["cmyk.jpg"], 1).convert("CMYK").save(folder / "cmyk.jpg")
    w, h = READABLE["gray16.png"]
    Image.fromarray(np.random.default_rng(2).integers(0, 65536, (h, w)).astype(np.uint16)).save(folder / "gray16.png")
    noise(READABLE["rgba.png"], 3).convert("RGBA").save(folder / "rgba.png")
    noise(READABLE["palette.png"], 4).convert("P").save(folder / "palette.png")
    noise(READABLE["gray.png"], 5).convert("L").save(folder / "gray.png")
    noise(READABLE["one_pixel.png"], 6).save(folder / "one_pixel.png")
    (folder / "empty.png").write_bytes(b"")
    buffer = io.BytesIO()
    noise((32, 32), 7).save(buffer, format="PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "text.jpg").write_text("this is not a photo\n")
    (folder / "huge.png").write_bytes(png_claiming(20000, 20000))
    return folder


@pytest.fixture
def vae_dir(tmp_path):
    torch.manual_seed(0)
    cfg = SimVAEConfig(block_out_channels=[8, 8, 8, 8], layers_per_block=1, layers_mid_block=1, latent_channels=4)
    SimVAE(cfg).save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def run_cli(argv, capsys):
    """(exit code, stderr) of `latent-pmrf ARGV`."""
    code = 0
    try:
        main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def command(kind, model, inputs, output, *extra):
    if kind == "restore":
        return ["restore", "--ckpt", str(model), "--input", str(inputs), "--output", str(output), "--steps", "1",
                "--device", "cpu", *extra]
    return ["reconstruct", "--vae", str(model), "--input", str(inputs), "--output", str(output), "--device", "cpu",
            *extra]


@pytest.mark.parametrize("kind", ["restore", "reconstruct"])
def test_every_readable_kind_is_processed_and_every_other_named(kind, pipeline_dir, vae_dir,  # noqa: F811
                                                                 tmp_path, capsys):
    inputs = write_awkward_images(tmp_path / "in")
    out = tmp_path / "out"
    code, err = run_cli(command(kind, pipeline_dir if kind == "restore" else vae_dir, inputs, out), capsys)
    assert code == 3
    for name in UNREADABLE:
        assert name in err
    assert "above the limit" in err and "--max-pixels" in err  # huge.png, refused from its header
    assert "4 file(s) could not be read" in err
    written = out / "restored" if kind == "restore" else out
    sizes = {p.name: Image.open(p).size for p in written.glob("*.png")}
    assert sizes == {name.rsplit(".", 1)[0] + ".png": size for name, size in READABLE.items()}


def test_reconstruct_refuses_existing_outputs_unless_told(vae_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    noise((16, 16), 1).save(inputs / "a.png")
    noise((16, 16), 2).save(inputs / "b.png")
    out = tmp_path / "out"
    assert run_cli(command("reconstruct", vae_dir, inputs, out), capsys)[0] == 0
    first = (out / "a.png").read_bytes()
    (out / "a.png").write_bytes(b"kept")
    (out / "b.png").unlink()
    code, err = run_cli(command("reconstruct", vae_dir, inputs, out), capsys)
    assert code == 2 and "already exist" in err and "--overwrite" in err and "--skip-existing" in err
    assert (out / "a.png").read_bytes() == b"kept" and not (out / "b.png").exists()  # refused before any work
    code, err = run_cli(command("reconstruct", vae_dir, inputs, out, "--skip-existing"), capsys)
    assert code == 0 and "kept 1 existing output" in err
    assert (out / "a.png").read_bytes() == b"kept" and (out / "b.png").is_file()
    assert run_cli(command("reconstruct", vae_dir, inputs, out, "--overwrite"), capsys)[0] == 0
    assert (out / "a.png").read_bytes() == first
    code, err = run_cli(command("reconstruct", vae_dir, inputs, out, "--overwrite", "--skip-existing"), capsys)
    assert code == 2 and "exclude each other" in err


def test_reconstruct_unwritable_output_is_one_line_before_work(vae_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    noise((16, 16), 1).save(inputs / "a.png")
    (tmp_path / "a_file").write_text("x")
    code, err = run_cli(command("reconstruct", vae_dir, inputs, tmp_path / "a_file" / "sub"), capsys)
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ evaluate


def evaluation_folders(root):
    """pred/ and gt/ with the awkward kinds as predictions (gt: RGB noise of each size), a bad file on
    each side of two pairs, and clean/ + clean_gt/: only the pairs that can be read."""
    pred = write_awkward_images(root / "pred")
    gt, clean, clean_gt = root / "gt", root / "clean", root / "clean_gt"
    for folder in (gt, clean, clean_gt):
        folder.mkdir()
    for i, (name, size) in enumerate(READABLE.items()):
        stem = name.rsplit(".", 1)[0]
        noise(size, 100 + i).save(gt / f"{stem}.png")
        shutil.copy(pred / name, clean / name)
        shutil.copy(gt / f"{stem}.png", clean_gt / f"{stem}.png")
    for i, name in enumerate(UNREADABLE):
        noise((8, 8), 200 + i).save(gt / f"{name.rsplit('.', 1)[0]}.png")
    noise((8, 8), 300).save(pred / "gt_broken.png")
    (gt / "gt_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return pred, gt, clean, clean_gt


def test_evaluate_skips_unreadable_pairs_loudly_and_equals_the_clean_subset(tmp_path, capsys):
    pred, gt, clean, clean_gt = evaluation_folders(tmp_path)
    out = tmp_path / "res" / "results.csv"
    code, err = run_cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr", "--out", str(out),
                         "--label", "awkward", "--device", "cpu"], capsys)
    assert code == 3
    for name in (*UNREADABLE, "gt_broken.png"):
        assert name in err
    assert str(gt / "gt_broken.png") in " ".join(err.split())  # the unreadable side of the pair is named
    assert "5 file(s) could not be read" in err and "images=6" in err
    row = next(csv.DictReader(out.open()))
    assert row["images"] == "6"
    per_image = list(csv.DictReader(out.with_name("results.awkward.per_image.csv").open()))
    assert sorted(r["file"] for r in per_image) == sorted(name.rsplit(".", 1)[0] for name in READABLE)

    clean_out = tmp_path / "clean.csv"
    assert run_cli(["evaluate", "--pred", str(clean), "--gt", str(clean_gt), "--metrics", "psnr", "--out",
                    str(clean_out), "--label", "clean", "--device", "cpu"], capsys)[0] == 0
    clean_rows = {r["file"]: r["psnr"] for r in csv.DictReader(clean_out.with_name("clean.clean.per_image.csv").open())}
    assert {r["file"]: r["psnr"] for r in per_image} == clean_rows  # each value belongs to its own pair
    assert row["psnr"] == next(csv.DictReader(clean_out.open()))["psnr"]


def test_evaluate_missing_folder_and_unwritable_results_stop_before_any_metric(tmp_path, capsys, monkeypatch):
    pred, gt, _, _ = evaluation_folders(tmp_path)
    from latent_pmrf.metrics import suite

    def no_metrics(*args, **kwargs):
        raise AssertionError("a metric was built before the inputs were checked")

    monkeypatch.setattr(suite.MetricSuite, "__init__", no_metrics)
    (tmp_path / "a_file").write_text("x")
    cases = [(["--pred", str(tmp_path / "nowhere"), "--gt", str(gt)], "--pred folder not found"),
             (["--pred", str(pred), "--gt", str(tmp_path / "nowhere")], "--gt folder not found"),
             (["--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "a_file" / "r.csv")], "cannot write into"),
             (["--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path)], "is a folder")]
    for flags, message in cases:
        argv = ["evaluate", "--metrics", "psnr", "--device", "cpu", "--out", str(tmp_path / "r.csv"), *flags]
        code, err = run_cli(argv, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------ checkpoints and model folders


@pytest.fixture(scope="module")
def wrong_models(tmp_path_factory, faces_dir, pipeline_dir):  # noqa: F811
    """Files a user may pass where a flow checkpoint or a VAE folder is expected: real one-step VAE and
    posterior-mean training checkpoints, random bytes, a text file, a flow checkpoint of a future
    pipeline format, one of an older latent-pmrf, a Sim-VAE folder, a folder of photos, a missing path."""
    root = tmp_path_factory.mktemp("wrong_models")
    train(TASKS["vae"], tiny_vae_run(faces_dir, root / "vae_run", 1), val_lpips=False)
    pm_task, pm_cfg = load_task_config(ROOT / "configs/posterior_mean/swinir_ffhq512.yaml", [
        *(f"model.{o}" for o in TINY_SWINIR), *data_overrides(faces_dir, root / "pm_run", 1),
        "data.crop_size=32", "trainer.val_every_n_steps=0", "trainer.checkpoint_every_n_steps=1"])
    train(pm_task, pm_cfg)
    (root / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "notes.txt").write_text("step 1000: loss 0.1\n")
    pipeline = RestorationPipeline.from_pretrained(pipeline_dir)
    future = {**pipeline.config_dict(), "format_version": 99}
    torch.save({"hyper_parameters": {"config": {"task": "latent_pmrf"}, "pipeline": future},
                "state_dict": {"pipeline." + k: v for k, v in pipeline.state_dict().items()}}, root / "future.ckpt")
    torch.save({"hyper_parameters": {"config": {}, "frozen_configs": {}}, "state_dict": {}}, root / "old.ckpt")
    SimVAE(SimVAEConfig(block_out_channels=[8, 8], layers_per_block=1, layers_mid_block=1,
                        latent_channels=4)).save_pretrained(root / "sim_vae")
    return {"vae": last_checkpoint(root / "vae_run"), "posterior_mean": last_checkpoint(root / "pm_run"),
            "random": root / "random.ckpt", "text": root / "notes.txt", "future": root / "future.ckpt",
            "old": root / "old.ckpt", "vae_folder": root / "sim_vae", "missing": root / "missing.ckpt",
            "image_folder": write_awkward_images(root / "photos")}


RESTORE_EXPECTS = {
    "vae": r"not a latent-pmrf flow checkpoint \(it is a vae checkpoint: .*export-vae",
    "posterior_mean": r"not a latent-pmrf flow checkpoint \(it is a posterior_mean checkpoint",
    "random": r"not a readable PyTorch checkpoint \(.*\)",
    "text": r"not a readable PyTorch checkpoint \(the file starts with b'step 100",
    "future": r"not a latent-pmrf-pipeline config of version 1 \(found format 'latent-pmrf-pipeline', version 99\)",
    "old": r"older latent-pmrf",
    "vae_folder": r"holds a (AutoencoderKLSim|SimVAE) \(config.json\), not a restoration model",
    "missing": r"not found",
    "image_folder": r"holds neither config.json nor model.safetensors",
}


def one_line_error(err):
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("which", list(RESTORE_EXPECTS))
def test_restore_names_a_wrong_checkpoint_and_what_it_expected(which, wrong_models, tmp_path, capsys):
    import re

    inputs = tmp_path / "in"
    inputs.mkdir()
    noise((16, 16), 0).save(inputs / "a.png")
    code, err = run_cli(command("restore", wrong_models[which], inputs, tmp_path / "out"), capsys)
    line = one_line_error(err)
    assert code == 2 and str(wrong_models[which]) in line and re.search(RESTORE_EXPECTS[which], line), line
    if which != "future":
        assert "expected a flow training checkpoint" in line


@pytest.mark.parametrize("which", ["vae", "posterior_mean", "random", "text", "future", "missing"])
def test_reconstruct_names_a_wrong_vae_and_what_it_expected(which, wrong_models, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    noise((16, 16), 0).save(inputs / "a.png")
    code, err = run_cli(command("reconstruct", wrong_models[which], inputs, tmp_path / "out"), capsys)
    line = one_line_error(err)
    assert code == 2 and str(wrong_models[which]) in line and "expected a Sim-VAE snapshot directory" in line
    if wrong_models[which].suffix == ".ckpt" and which != "missing":
        assert "export-vae" in line
    assert not list((tmp_path / "out").glob("*.png"))


def _png_header_only(path, width, height, bit_depth):
    """A PNG whose header claims width × height (RGB, bit_depth) and whose data is a few bytes."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("max_pixels", [None, 4_000_000])
def test_a_decompression_bomb_is_an_image_read_error_naming_its_size(tmp_path, bit_depth, max_pixels):
    """400 Mpx claimed in the header: refused before decoding, with or without a limit, 8- or 16-bit
    (OpenCV, which decodes 16-bit PNGs, has no bomb check of its own), and the message has the size."""
    from latent_pmrf.data.image_io import ImageReadError, read_image

    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000, bit_depth)
    with pytest.raises(ImageReadError, match="400000000 pixels|20000x20000") as err:
        read_image(bomb, max_pixels)
    assert str(bomb) in str(err.value) and "\n" not in str(err.value)
