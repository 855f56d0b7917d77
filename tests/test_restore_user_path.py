"""`restore` on a folder a user would hand it (issue 17): tiny, gray, RGBA, colliding names, a
corrupt file, an existing output folder, an unwritable one; every readable file is processed,
every problem named, the exit code non-zero when anything failed."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from latent_pmrf.cli.main import main
from latent_pmrf.flow import RestorationPipeline
from latent_pmrf.models.hdit import HDiT, HDiTConfig
from latent_pmrf.models.swinir import SwinIR, SwinIRConfig


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    torch.manual_seed(0)
    velocity = HDiT(HDiTConfig(patch_size=2, mapping_width=32, levels=[
        dict(depth=1, width=32, d_head=16, kernel_size=7), dict(depth=1, width=64, d_head=16, attention="global")]))
    swinir = SwinIR(SwinIRConfig(embed_dim=12, depths=[1], num_heads=[2], window_size=4, scale=4, img_size=16,
                                 upsample_channels=8))
    folder = tmp_path_factory.mktemp("pipe")
    RestorationPipeline(swinir, velocity, None, source_noise_std=0.2).save_pretrained(folder)
    return folder


def photo(size, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def run(pipeline_dir, inputs, output, *extra):
    main(["restore", "--ckpt", str(pipeline_dir), "--input", str(inputs), "--output", str(output), "--steps", "1",
          "--device", "cpu", *extra])


def test_mixed_folder_is_processed_and_problems_named(pipeline_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo((1, 1)).save(inputs / "tiny.png")  # smaller than the 7x7 neighbourhood: padded, not fatal
    photo((23, 9)).save(inputs / "small.png")
    photo((40, 30), "L").save(inputs / "gray.png")
    photo((33, 35), "RGBA").save(inputs / "rgba.png")
    (inputs / "broken.png").write_bytes(b"not an image")
    photo((3000, 2000)).save(inputs / "huge.png")
    with pytest.raises(SystemExit) as exit_:
        run(pipeline_dir, inputs, tmp_path / "out", "--max-pixels", "1000000")
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert "broken.png" in err and "huge.png" in err and "3000x2000" in err
    out = tmp_path / "out" / "restored"
    sizes = {p.name: Image.open(p).size for p in out.glob("*.png")}
    assert sizes == {"tiny.png": (1, 1), "small.png": (23, 9), "gray.png": (40, 30), "rgba.png": (33, 35)}
    gray = Image.open(out / "gray.png")
    assert gray.mode == "L"  # gray stays gray
    assert Image.open(out / "rgba.png").mode == "RGB"


def test_colliding_names_are_refused_before_any_work(pipeline_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo((32, 32)).save(inputs / "face.png")
    photo((32, 32)).save(inputs / "face.jpg")
    with pytest.raises(SystemExit) as exit_:
        run(pipeline_dir, inputs, tmp_path / "out")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "face.jpg" in err and "face.png" in err and "would both be written" in err
    assert not (tmp_path / "out" / "restored").exists()


def test_existing_outputs_need_overwrite_or_skip_existing(pipeline_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo((32, 32), seed=1).save(inputs / "a.png")
    photo((32, 32), seed=2).save(inputs / "b.png")
    out = tmp_path / "out"
    run(pipeline_dir, inputs, out)
    first = (out / "restored" / "a.png").read_bytes()
    (out / "restored" / "b.png").unlink()
    with pytest.raises(SystemExit) as exit_:
        run(pipeline_dir, inputs, out)
    assert exit_.value.code == 2 and "already exist" in capsys.readouterr().err
    (out / "restored" / "a.png").write_bytes(b"kept")
    run(pipeline_dir, inputs, out, "--skip-existing")
    assert (out / "restored" / "a.png").read_bytes() == b"kept" and (out / "restored" / "b.png").is_file()
    run(pipeline_dir, inputs, out, "--overwrite")
    assert (out / "restored" / "a.png").read_bytes() == first


def test_unwritable_or_file_output_is_one_line_before_work(pipeline_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo((32, 32)).save(inputs / "a.png")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as exit_:
        run(pipeline_dir, inputs, tmp_path / "a_file")
    assert exit_.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a path under a file instead
            target = tmp_path / "a_file" / "sub"
        else:
            target = locked / "out"
        with pytest.raises(SystemExit) as exit_:
            run(pipeline_dir, inputs, target)
        assert exit_.value.code == 2 and "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_no_cuda_is_one_line(pipeline_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_:
        main(["restore", "--ckpt", str(pipeline_dir), "--input", str(tmp_path), "--output", str(tmp_path / "o"),
              "--device", "cuda"])
    assert exit_.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def test_compile_flag_compiles_every_network_once_and_restores(pipeline_dir, tmp_path, monkeypatch):
    """restore --compile: RestorationPipeline.compile_nets runs once, on the loaded pipeline (the
    compiled numerics are tests/test_compile.py's); without the flag nothing is compiled."""
    calls = []
    real = RestorationPipeline.compile_nets
    monkeypatch.setattr(RestorationPipeline, "compile_nets",
                        lambda self, **kw: calls.append(self) or real(self, backend="eager", **kw))
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo((64, 64)).save(inputs / "a.png")
    run(pipeline_dir, inputs, tmp_path / "plain")
    assert not calls
    run(pipeline_dir, inputs, tmp_path / "compiled", "--compile")
    assert len(calls) == 1 and calls[0].velocity._compiled_call_impl is not None
    assert calls[0].posterior_mean._compiled_call_impl is not None
    plain = np.asarray(Image.open(tmp_path / "plain" / "restored" / "a.png"))
    compiled = np.asarray(Image.open(tmp_path / "compiled" / "restored" / "a.png"))
    assert np.abs(plain.astype(int) - compiled).max() <= 1
