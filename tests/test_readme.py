"""The README's commands work as written after its set-up (issue 17): every `latent-pmrf ...` line
parses with the real CLI parser, and the checkout's wrapper runs the CLI from the set-up's venv."""

import os
import shlex
import shutil
import subprocess

import pytest

from conftest import REPO
from latent_pmrf.cli.main import build_parser


def readme_commands() -> list[str]:
    """`latent-pmrf ...` lines of the README's code blocks, continuation lines joined."""
    lines, commands, in_code = (REPO / "README.md").read_text().splitlines(), [], False
    pending = ""
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            continue
        text = pending + line.split(" #")[0].strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text.startswith("latent-pmrf "):
            commands.append(text)
    return commands


def test_readme_has_commands():
    assert len(readme_commands()) >= 15


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.func)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_wrapper_runs_the_cli_from_the_setup_venv():
    venv = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), "print-venv"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if not os.access(f"{venv}/bin/python", os.X_OK):
        pytest.skip(f"the set-up's venv is not built here ({venv}); `make test` builds it")
    proc = subprocess.run([str(REPO / "latent_pmrf/cli/latent-pmrf"), "model-info", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "usage: latent-pmrf model-info" in proc.stdout, proc.stderr
