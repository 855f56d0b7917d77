"""``latent-pmrf degrade-preview``: grid layout, captions, seeding, config files and clear errors."""

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from latent_pmrf.cli.degrade_preview import _wrap, degrade_preview
from latent_pmrf.cli.main import main


def write_photo(path, h=96, w=112) -> np.ndarray:
    """A smooth colour image with an edge, saved as an 8-bit PNG; returns the 8-bit array."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.5 + 0.4 * np.sin(x / 7), 0.5 + 0.4 * np.cos(y / 5), (x + y) / (h + w)], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 2] = (0.9, 0.1, 0.3)
    arr = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def grid_tiles(path, n: int, tile: int) -> tuple[np.ndarray, list[np.ndarray], int]:
    """(grid, the n + 1 tiles, caption strip height), checking the grid's layout on the way."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil((n + 1) / columns)
    assert grid.shape[1] == columns * tile
    assert grid.shape[0] % rows == 0
    strip = grid.shape[0] // rows - tile
    assert 0 < strip < tile
    tiles = []
    for k in range(n + 1):
        x, y = (k % columns) * tile, (k // columns) * (tile + strip)
        tiles.append(grid[y : y + tile, x : x + tile])
        caption = grid[y + tile : y + tile + strip, x : x + tile]
        assert (caption == 255).mean() > 0.7 and caption.min() < 100  # white strip with dark text
    return grid, tiles, strip


def test_grid_of_a_generated_image(tmp_path, capsys):
    arr = write_photo(tmp_path / "hq.png")
    out = tmp_path / "sub" / "grid.png"
    main(["degrade-preview", "--preset", "difface", "--image", str(tmp_path / "hq.png"), "--n", "5",
          "--out", str(out), "--size", "96"])
    assert str(out) in capsys.readouterr().err.replace("\n", "")
    _, tiles, _ = grid_tiles(out, n=5, tile=96)
    np.testing.assert_array_equal(tiles[0], arr[:, 8:104])  # GT = the centre square, untouched
    for i in range(len(tiles)):
        for j in range(i + 1, len(tiles)):
            assert not np.array_equal(tiles[i], tiles[j]), (i, j)


def test_default_size_keeps_small_images_and_caps_large_ones(tmp_path):
    write_photo(tmp_path / "small.png", 64, 80)
    grid = np.asarray(Image.open(degrade_preview(tmp_path / "small.png", tmp_path / "a.png", n=1)))
    assert grid.shape[1] == 80  # 1 column of the unresized 80-wide image
    write_photo(tmp_path / "large.png", 600, 700)
    grid = np.asarray(Image.open(degrade_preview(tmp_path / "large.png", tmp_path / "b.png", n=1)))
    assert grid.shape[1] == 512


def test_same_seed_same_bytes_other_seed_other_samples(tmp_path):
    write_photo(tmp_path / "hq.png")
    run = lambda name, seed: degrade_preview(tmp_path / "hq.png", tmp_path / name, n=4, seed=seed, size=64)
    assert run("a.png", 3).read_bytes() == run("b.png", 3).read_bytes()
    assert run("a.png", 3).read_bytes() != run("c.png", 4).read_bytes()
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary behind


def test_real_face(tmp_path, faces_dir):
    image = min((faces_dir / "hq").glob("*.png"))
    out = tmp_path / "grid.png"
    main(["degrade-preview", "--image", str(image), "--n", "4", "--out", str(out), "--seed", "1"])
    size = Image.open(image).size[0]
    _, tiles, _ = grid_tiles(out, n=4, tile=min(size, 512))
    assert len({t.tobytes() for t in tiles}) == len(tiles)


def test_config_file(tmp_path):
    write_photo(tmp_path / "hq.png")
    cfg = tmp_path / "deg.yaml"
    cfg.write_text("preset: difface\nblur_prob: 0.0\nnoise_prob: 0.0\njpeg_prob: 0.0\ngray_prob: 0.0\n"
                   "hflip_prob: 0.0\ndownsample_range: [1.0, 1.0]\n")
    out = degrade_preview(tmp_path / "hq.png", tmp_path / "g.png", preset=None, n=1, size=64, config=cfg)
    _, tiles, _ = grid_tiles(out, n=1, tile=64)
    np.testing.assert_array_equal(tiles[0], tiles[1])  # every step disabled: LQ == GT


def test_wrap_fits_the_tile_width():
    font = ImageFont.load_default(size=12)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrap(draw, "#3 aniso sigma=(12.1,3.4) theta=-127° s=21.7 n=13.2 q=44 gray flip", font, 120)
    assert len(lines) > 1 and all(draw.textlength(line, font=font) <= 120 for line in lines)


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "unknown degradation preset 'nope'"),
    (["--image", "missing.png"], "missing.png"),
    (["--config", "nowhere.yaml"], "nowhere.yaml"),
    (["--config", "bad.yaml"], "blur_sigmas"),
    (["--config", "bad_value.yaml"], "noise_range"),
    (["--config", "list.yaml"], "must be a mapping"),
    (["--config", "broken.yaml"], "cannot read degradation config"),
])
def test_clear_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    write_photo(tmp_path / "hq.png")
    (tmp_path / "bad.yaml").write_text("preset: difface\nblur_sigmas: [1, 2]\n")
    (tmp_path / "bad_value.yaml").write_text("noise_range: [5, 1]\n")
    (tmp_path / "list.yaml").write_text("- blur_prob\n- 0.5\n")
    (tmp_path / "broken.yaml").write_text("blur_prob: [0.5\n")
    argv = ["degrade-preview", "--image", "hq.png", "--out", "g.png", "--n", "2", *args]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert message in err
    if "--config" in args and "nowhere" not in args[1]:
        assert args[1] in err  # a config error names its file
    assert not (tmp_path / "g.png").exists()


def test_preset_and_config_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["degrade-preview", "--image", "x.png", "--out", "g.png", "--preset", "gfpgan", "--config", "c.yaml"])
    assert "not allowed with argument" in capsys.readouterr().err
