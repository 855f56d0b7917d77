"""A disk that fills up, or a writer that silently writes garbage, in the middle of a real (tiny)
training run (issue 14): the run stops with one line naming the checkpoint and the cause, the
previous checkpoint stays readable, no temporary file is left, and the retention of
``ModelCheckpoint(save_top_k=1)`` never deletes the last good checkpoint."""

import errno

import pytest
import torch
from test_checkpoints_and_nonfinite import tiny_vae_run

from latent_pmrf.lightning.checkpoints import CheckpointWriteError, readable, resume_checkpoint
from latent_pmrf.lightning.tasks import TASKS, train

real_save = torch.save


def failing_writer(from_step: int, fail):
    """torch.save that calls ``fail(file)`` instead of writing any checkpoint of step >= ``from_step``."""
    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step", -1) >= from_step:
            return fail(f)
        return real_save(obj, f, *args, **kwargs)

    return save


def disk_full(f):
    f.write(b"\x50\x4b\x03\x04 first bytes")
    raise OSError(errno.ENOSPC, "No space left on device")


def silent_garbage(f):
    f.write(b"\x50\x4b\x03\x04 not a whole checkpoint")  # a zip header, then nothing: no error raised


def assert_only_step_one_checkpoints(out):
    files = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert files == ["last.ckpt", "step00000001.ckpt"], files  # nothing deleted, no temporary left behind
    for name in files:
        path = out / "checkpoints" / name
        assert readable(path) and torch.load(path, map_location="cpu", weights_only=True)["global_step"] == 1
    assert resume_checkpoint(out) is not None


def test_disk_full_names_the_checkpoint_and_keeps_the_previous_one(faces_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(torch, "save", failing_writer(2, disk_full))
    with pytest.raises(CheckpointWriteError) as err:
        train(TASKS["vae"], tiny_vae_run(faces_dir, out, 3), val_lpips=False)
    message = str(err.value)
    assert "\n" not in message and err.value.errno == errno.ENOSPC
    assert str(out / "checkpoints") in message and "No space left on device" in message
    monkeypatch.undo()
    assert_only_step_one_checkpoints(out)


def test_a_corrupt_new_checkpoint_never_replaces_or_retires_the_good_one(faces_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(torch, "save", failing_writer(2, silent_garbage))
    with pytest.raises(CheckpointWriteError, match=r"step00000002\.ckpt: the written file does not read back"):
        train(TASKS["vae"], tiny_vae_run(faces_dir, out, 3), val_lpips=False)
    monkeypatch.undo()
    assert_only_step_one_checkpoints(out)


def test_the_cli_reports_a_failed_checkpoint_write_in_one_line(monkeypatch, capsys):
    """`latent-pmrf train` on a full disk: the error line and exit code 2, not a traceback."""
    from latent_pmrf.cli import main as cli

    def full_disk(args):
        error = CheckpointWriteError("cannot write checkpoint runs/x/checkpoints/last.ckpt: No space left on device "
                                     "(the previous checkpoint, if any, is intact)")
        error.errno = errno.ENOSPC
        raise error

    monkeypatch.setattr(cli, "_train", full_disk)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "configs/vae/quickstart.yaml"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "No space left on device" in err and "last.ckpt" in err
