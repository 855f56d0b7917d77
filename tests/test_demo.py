"""The browser demo (issue 15): its restore function gives what `latent-pmrf restore` writes for the
same file and options (gray, RGBA, RGB, detected faces, early branching, a second task), and the page,
served by gradio and driven by a real headless chromium, takes an upload and hands back a restored
PNG of the input's size."""

import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from conftest import REPO, randomize
from latent_pmrf.cli.main import main
from latent_pmrf.data.image_io import read_image
from latent_pmrf.flow import RestorationPipeline
from latent_pmrf.models.hdit import HDiT, HDiTConfig
from latent_pmrf.models.swinir import SwinIR, SwinIRConfig
from latent_pmrf.models.task_embedding import TaskEmbeddingConfig

APT = "apt-get install -y chromium chromium-driver"


def tiny_pipeline(folder, tasks=None):
    """A random pixel-space pipeline cheap at 512² (f(y) and v_θ on 32² tokens, as tests/test_faces.py's);
    ``tasks``: a task-embedded velocity net with one f(y) per task. Random weights everywhere
    (``randomize``), so v_θ is not zero and the restoration differs from f(y) + noise."""
    torch.manual_seed(0)
    embedding = TaskEmbeddingConfig(tasks=tasks, init="random") if tasks else TaskEmbeddingConfig()
    velocity = randomize(HDiT(HDiTConfig(patch_size=16, mapping_width=32, task_embedding=embedding,
                                         levels=[{"depth": 1, "width": 32, "d_head": 16, "attention": "global"}])))

    def swinir():
        return randomize(SwinIR(SwinIRConfig(embed_dim=12, depths=[1], num_heads=[2], window_size=4, scale=16,
                                             img_size=32, upsample_channels=8)))

    posterior_mean = {task: swinir() for task in tasks} if tasks else swinir()
    RestorationPipeline(posterior_mean, velocity, None, source_noise_std=0.2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("demo") / "pipe")


@pytest.fixture(scope="module")
def restorer(pipeline_dir):
    from latent_pmrf.cli.demo import DemoRestorer
    from latent_pmrf.flow.pipeline import load_restoration

    return DemoRestorer(load_restoration(pipeline_dir))


def astronaut_face(side: int = 96) -> Image.Image:
    """The face of scikit-image's astronaut (a NASA photo, public domain), resized to side²."""
    return Image.fromarray(data.astronaut()[20:240, 140:360]).resize((side, side), Image.BICUBIC)


def restore_cli(pipeline_dir, image_path, out, *extra):
    main(["restore", "--ckpt", str(pipeline_dir), "--input", str(image_path), "--output", str(out), "--steps", "2",
          "--seed", "3", "--device", "cpu", "--save-posterior-mean", *extra])
    return out


@pytest.mark.parametrize("mode, size", [("RGB", (96, 96)), ("L", (40, 30)), ("RGBA", (33, 35))])
def test_upload_is_restored_as_restore_writes_it(restorer, pipeline_dir, tmp_path, mode, size):
    """The button's function against `latent-pmrf restore` on the same file: equal 8-bit images,
    the input's size, gray kept gray, alpha dropped; the download is that PNG."""
    from latent_pmrf.cli.demo import restore_upload

    image = astronaut_face(64).resize(size).convert(mode)
    path = tmp_path / "photo.png"
    image.save(path)
    result, png = restore_upload(restorer, path, tmp_path / "downloads", steps=2, seed=3)
    out = restore_cli(pipeline_dir, path, tmp_path / "cli")
    expected = np.asarray(Image.open(out / "restored" / "photo.png"))
    assert result.restored.dtype == np.uint8 and result.restored.shape == expected.shape
    assert expected.shape == ((size[1], size[0]) if mode == "L" else (size[1], size[0], 3))  # gray stays gray
    assert np.array_equal(result.restored, expected)
    assert np.array_equal(result.posterior_mean, np.asarray(Image.open(out / "posterior_mean" / "photo.png")))
    assert png.name == "photo_restored.png" and np.array_equal(np.asarray(Image.open(png)), expected)
    assert "restored in" in result.note


def test_numpy_image_seed_and_options(restorer):
    """`DemoRestorer.restore` on an array: uint8 outputs of the input's size; the seed changes the
    restoration, not f(y); bad options are errors naming them."""
    image = np.asarray(astronaut_face(48), dtype=np.float32) / 255
    first = restorer.restore(image, steps=2, seed=0)
    again = restorer.restore(image, steps=2, seed=0)
    other = restorer.restore(image, steps=2, seed=1)
    assert first.restored.shape == first.posterior_mean.shape == (48, 48, 3) and first.restored.dtype == np.uint8
    assert np.array_equal(first.restored, again.restored) and not np.array_equal(first.restored, other.restored)
    assert np.array_equal(first.posterior_mean, other.posterior_mean)
    assert not np.array_equal(first.restored, np.rint(image * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="unknown task 'sirr'"):
        restorer.restore(image, steps=2, task="sirr")
    with pytest.raises(ValueError, match="faces must be one of"):
        restorer.restore(image, steps=2, faces="all")
    with pytest.raises(ValueError, match="needs --scorer"):
        restorer.restore(image, steps=2, branches=2)


def test_early_branching_matches_restore(restorer, pipeline_dir, tmp_path):
    from latent_pmrf.cli.demo import restore_upload

    path = tmp_path / "face.png"
    astronaut_face(64).save(path)
    result, _ = restore_upload(restorer, path, tmp_path / "downloads", steps=2, seed=3, branches=3, branch_steps=1,
                               scorer="sharpness")
    out = restore_cli(pipeline_dir, path, tmp_path / "cli", "--branches", "3", "--scorer", "sharpness")
    assert np.array_equal(result.restored, np.asarray(Image.open(out / "restored" / "face.png")))
    assert "early branching chose draw" in result.note


def test_detect_mode_matches_restore_faces(restorer, pipeline_dir, tmp_path):
    """--faces detect on a photo with one face: the page's restoration is restore's photo."""
    from latent_pmrf.cli.demo import restore_upload

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()[0:300, 100:349]).save(path)
    result, _ = restore_upload(restorer, path, tmp_path / "downloads", faces="detect", steps=1, seed=3)
    main(["restore", "--ckpt", str(pipeline_dir), "--input", str(path), "--output", str(tmp_path / "cli"), "--steps",
          "1", "--seed", "3", "--device", "cpu", "--faces", "detect"])
    expected = np.asarray(Image.open(tmp_path / "cli" / "restored" / "astronaut.png"))
    assert result.restored.shape == expected.shape == (300, 249, 3)
    assert np.array_equal(result.restored, expected) and "1 face(s) restored" in result.note
    photo = np.rint(read_image(path) * 255).astype(np.uint8)
    assert not np.array_equal(result.restored, photo) and not np.array_equal(result.posterior_mean, photo)


def test_a_two_task_model_restores_the_chosen_task(tmp_path):
    from latent_pmrf.cli.demo import DemoRestorer
    from latent_pmrf.flow.pipeline import load_restoration

    restorer = DemoRestorer(load_restoration(tiny_pipeline(tmp_path / "two", tasks=["bfr", "sirr"])))
    image = np.asarray(astronaut_face(32), dtype=np.float32) / 255
    bfr, default = (restorer.restore(image, steps=2, task=task) for task in ("bfr", None))
    sirr = restorer.restore(image, steps=2, task="sirr")
    assert np.array_equal(bfr.restored, default.restored)  # the first task is the default, as in restore
    assert not np.array_equal(bfr.restored, sirr.restored)


def test_demo_help_imports_neither_torch_nor_gradio():
    code = ("import sys\nfrom latent_pmrf.cli.main import build_parser\ntry:\n"
            "    build_parser().parse_args(['demo', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'gradio' not in sys.modules, sorted(sys.modules)\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_missing_gradio_says_how_to_install_it(monkeypatch, pipeline_dir, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` raise ImportError
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--ckpt", str(pipeline_dir), "--device", "cpu"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[demo]'" in err and "make venv" in err


# ---------------------------------------------------------------- the page in a real browser


def _browser_paths() -> tuple[str, str]:
    """Debian's chromium and its chromedriver (Selenium's own driver download is never used)."""
    found = {name: shutil.which(name) for name in ("chromium", "chromedriver")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH: `{APT}` (as root; `make test` tries it)")
    return found["chromium"], found["chromedriver"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def browser(tmp_path):
    chromium, chromedriver = _browser_paths()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: `make venv` installs it")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--disable-gpu"):
        options.add_argument(flag)
    downloads = tmp_path / "browser-downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture
def served_demo(restorer):
    pytest.importorskip("gradio", reason="gradio missing: `make venv` installs it (setup.cfg [no-deps])")
    from latent_pmrf.cli.demo import build_app

    app = build_app(restorer, steps=2, subtitle="a tiny random-initialised model (tests/test_demo.py)")
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_page_restores_an_upload_in_a_real_browser(browser, served_demo, tmp_path):
    """Upload the astronaut's face, press Restore, download the PNG: the input's size, not the input.
    The screenshot goes to tmp_path (README's latent_pmrf/cli/assets/demo.png is one of these)."""
    from selenium.webdriver.common.by import By

    photo = tmp_path / "astronaut.png"
    astronaut_face(256).save(photo)
    browser.get(served_demo)
    heading = _wait(lambda: browser.find_elements(By.TAG_NAME, "h1"), 60, "the page's heading")
    assert "Latent-PMRF" in heading[0].text and "Latent-PMRF" in browser.title
    browser.find_element(By.CSS_SELECTOR, "#input input[type=file]").send_keys(str(photo))
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#input img"), 30, "the uploaded photo")
    browser.find_element(By.ID, "restore").click()
    for elem_id in ("posterior-mean", "restored"):
        _wait(lambda elem_id=elem_id: browser.find_elements(By.CSS_SELECTOR, f"#{elem_id} img"), 60, elem_id)
    _wait(lambda: browser.find_element(By.ID, "download").is_enabled(), 30, "the download button")
    browser.find_element(By.ID, "download").click()
    png = _wait(lambda: [p for p in browser.downloads.glob("*.png")], 30, "the downloaded PNG")[0]
    _wait(lambda: not list(browser.downloads.glob("*.crdownload")), 30, "the download to finish")
    restored = np.asarray(Image.open(png))
    assert png.name == "astronaut_restored.png" and restored.shape == (256, 256, 3)
    assert not np.array_equal(restored, np.asarray(Image.open(photo)))
    assert "256x256 restored in" in browser.find_element(By.ID, "note").text
    screenshot = tmp_path / "demo.png"
    browser.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] > 0
