"""Image reading of every odd input kind, the skip policy, the seeded BFR datasets and the sampler."""

import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from latent_pmrf.data.bfr_datasets import PairedFolderDataset, PairedOnlineDataset
from latent_pmrf.data.degradations import BFRDegradation
from latent_pmrf.data.image_folder import ImageFiles, ImageFolderCrops
from latent_pmrf.data.image_io import ImageReadError, read_image, to_uint8
from latent_pmrf.data.samplers import EpochIndexSampler, ResumableLoader


def rgb8(h=20, w=24, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------- odd inputs
def test_8bit_rgb_png_and_lossless_webp(tmp_path):
    arr = rgb8()
    for suffix, kwargs in ((".png", {}), (".webp", {"lossless": True}), (".bmp", {}), (".tif", {})):
        Image.fromarray(arr).save(tmp_path / f"a{suffix}", **kwargs)
        out = read_image(tmp_path / f"a{suffix}")
        assert out.dtype == np.float32 and out.shape == (20, 24, 3)
        np.testing.assert_array_equal(out, arr.astype(np.float32) / 255.0)


def test_16bit_rgb_and_gray_png_keep_their_precision(tmp_path):
    import cv2

    rgb16 = np.random.default_rng(1).integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    np.testing.assert_allclose(read_image(tmp_path / "rgb16.png"), rgb16 / 65535.0, rtol=0, atol=1e-7)
    gray16 = np.random.default_rng(2).integers(0, 65536, (10, 12), dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    out = read_image(tmp_path / "gray16.png")
    np.testing.assert_allclose(out, np.repeat(gray16[..., None], 3, 2) / 65535.0, rtol=0, atol=1e-7)
    cv2.imwrite(str(tmp_path / "rgba16.tif"), np.dstack([rgb16[..., ::-1], rgb16[..., :1]]))
    np.testing.assert_allclose(read_image(tmp_path / "rgba16.tif"), rgb16 / 65535.0, rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1"])
def test_other_modes_become_rgb(tmp_path, mode):
    src = Image.fromarray(rgb8())
    img = src.convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path, **({"quality": 100} if mode == "CMYK" else {}))
    out = read_image(path)
    assert out.shape == (20, 24, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    if mode in ("L", "LA", "1"):
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    if mode in ("L", "LA", "RGBA", "P", "1"):  # lossless: equal to PIL's own RGB conversion
        expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        np.testing.assert_array_equal(out, expected)
    if mode == "RGBA":  # alpha dropped, colours kept
        np.testing.assert_array_equal(out, rgb8().astype(np.float32) / 255)


def test_exif_orientation_is_applied(tmp_path):
    arr = rgb8(10, 30)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    assert read_image(tmp_path / "r.jpg").shape == (30, 10, 3)


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_corrupt_files_name_the_file(tmp_path, content):
    path = tmp_path / "bad.png"
    if content == "truncated":
        Image.fromarray(rgb8(64, 64)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(path)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png"):
        read_image(tmp_path / "nope.png")


# ----------------------------------------------------------------- 8-bit output
def test_to_uint8_gives_back_the_file_in_both_ranges_and_layouts(tmp_path):
    arr = rgb8(seed=3)
    Image.fromarray(arr).save(tmp_path / "a.png")
    unit = read_image(tmp_path / "a.png")  # (H, W, 3) in [0, 1]
    np.testing.assert_array_equal(to_uint8(unit, value_range=(0, 1)), arr)
    signed = torch.from_numpy(unit).permute(2, 0, 1) * 2 - 1  # (3, H, W) in [-1, 1], the models' layout
    np.testing.assert_array_equal(to_uint8(signed), arr)
    batch = torch.stack([signed, signed.flip(-1)])  # (2, 3, H, W)
    np.testing.assert_array_equal(to_uint8(batch), np.stack([arr, arr[:, ::-1]]))


def test_to_uint8_takes_the_nearest_level_and_clamps():
    values = np.random.default_rng(4).uniform(-0.2, 1.2, (16, 16, 3))
    nearest = np.clip(values, 0, 1) * 255  # the level must be within half a step of this
    for out in (to_uint8(values, value_range=(0, 1)),
                to_uint8(torch.from_numpy(values * 2 - 1).permute(2, 0, 1).float())):
        assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
        assert np.abs(out - nearest).max() <= 0.5 + 1e-4
    assert to_uint8(np.array([[[-3.0, 0.0, 9.0]]]), value_range=(0, 1)).tolist() == [[[0, 0, 255]]]


# ----------------------------------------------------------------- skip policy
@pytest.fixture
def folder_with_bad(tmp_path):
    for i in range(4):
        Image.fromarray(rgb8(40, 40, seed=i)).save(tmp_path / f"{i}.png")
    (tmp_path / "1.png").write_bytes(b"garbage")
    return tmp_path


def test_training_set_skips_and_counts(folder_with_bad, caplog):
    files = ImageFiles.from_sources([(folder_with_bad, None)], on_read_error="skip")
    with caplog.at_level(logging.WARNING):
        image, path, skipped = files.read(1)
    assert path.name == "2.png" and skipped == 1 and files.skipped_here == 1
    assert "1.png" in caplog.text
    ds = ImageFolderCrops([(folder_with_bad, None)], crop_size=32)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["skipped"].tolist() == [0, 1, 0, 0]


def test_raise_policy_and_eval_sets_raise(folder_with_bad):
    with pytest.raises(ImageReadError, match="1.png"):
        ImageFiles.from_sources([(folder_with_bad, None)], on_read_error="raise").read(1)
    with pytest.raises(ValueError, match="on_read_error"):
        ImageFiles([], on_read_error="ignore")


def test_all_unreadable_is_an_error(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"x")
    with pytest.raises(ImageReadError, match="consecutive unreadable"):
        ImageFiles.from_sources([(tmp_path, None)]).read(0)


# ----------------------------------------------------------------- sampler
@pytest.mark.parametrize("length,replicas,drop_last", [(10, 3, False), (10, 3, True), (7, 2, False), (8, 4, False)])
def test_sampler_partitions_ranks_and_reshuffles(length, replicas, drop_last):
    shards = []
    for rank in range(replicas):
        s = EpochIndexSampler(length, shuffle=True, seed=3, num_replicas=replicas, rank=rank, drop_last=drop_last)
        s.set_epoch(5)
        items = list(s)
        assert len(items) == len(s) and all(e == 5 for e, _ in items)
        shards.append([i for _, i in items])
    flat = [i for shard in shards for i in shard]
    if drop_last:
        assert len(flat) == len(set(flat)) == (length // replicas) * replicas
    else:
        assert set(flat) == set(range(length)) and len(flat) == -(-length // replicas) * replicas
    s = EpochIndexSampler(length, seed=3)
    first = [i for _, i in s]
    s.set_epoch(1)
    assert sorted(first) == list(range(length)) and first != [i for _, i in s]


# ----------------------------------------------------------------- seeded online pairs
@pytest.fixture
def hq_folder(tmp_path):
    root = tmp_path / "hq"
    root.mkdir()
    y, x = np.mgrid[0:80, 0:80]
    for i in range(6):
        img = np.stack([np.sin(x / (3 + i)), np.cos(y / 4), (x + y) / 160], -1) * 0.5 + 0.5
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"{i:02d}.png")
    return root


class EpochIndexItems(torch.utils.data.Dataset):
    """Each item is its own (epoch, index)."""

    def __init__(self, length):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, item):
        return torch.tensor(item)


def _pass(loader):
    return [tuple(x) for batch in loader for x in batch.tolist()]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("replicas", [1, 2])
def test_loader_resumes_mid_epoch_where_the_training_loop_stopped(workers, replicas):
    def loaders(epoch):
        out = [ResumableLoader(EpochIndexItems(23), sampler=EpochIndexSampler(23, seed=5, num_replicas=replicas,
                                                                              rank=r, drop_last=True),
               batch_size=3, drop_last=True, num_workers=workers) for r in range(replicas)]
        for loader in out:
            loader.sampler.set_epoch(epoch)
        return out

    expected = [_pass(loader) for loader in loaders(4)]
    states = []
    for rank, loader in enumerate(loaders(4)):
        batches = iter(loader)  # workers prefetch beyond the two batches handed out: not counted
        assert [tuple(x) for _ in range(2) for x in next(batches).tolist()] == expected[rank][:6]
        states.append(loader.state_dict())
    assert states == [{"epoch": 4, "position": 6 * replicas}] * replicas
    next_epoch = [_pass(loader) for loader in loaders(5)]
    for rank, loader in enumerate(loaders(0)):  # a fresh process: Lightning loads the state, then sets the epoch
        loader.load_state_dict(states[rank])
        loader.sampler.set_epoch(4)
        assert _pass(loader) == expected[rank][6:]
        loader.sampler.set_epoch(5)  # the next epoch starts from its beginning
        assert _pass(loader) == next_epoch[rank]


def test_sampler_resumed_on_another_number_of_ranks_takes_the_rest_once():
    first = [EpochIndexSampler(20, seed=1, num_replicas=2, rank=r, drop_last=True) for r in range(2)]
    order = [i for pair in zip(*(list(s) for s in first)) for _, i in pair]  # permutation positions 0, 1, ...
    state = first[0].state_dict(taken=3)
    assert state == {"epoch": 0, "position": 6}
    shards = []
    for rank in range(3):
        s = EpochIndexSampler(20, seed=1, num_replicas=3, rank=rank, drop_last=True)
        s.load_state_dict(state)
        shards.append([i for _, i in s])
    assert len({len(shard) for shard in shards}) == 1  # equal shares: DDP ranks step together
    rest = [i for shard in shards for i in shard]
    assert len(rest) == len(set(rest)) == 12 and set(rest) <= set(order[6:])


def test_crops_depend_only_on_seed_epoch_index(hq_folder):
    ds = ImageFolderCrops([(hq_folder, None)], crop_size=32, repeat=2, seed=7)
    torch.manual_seed(0)
    a = ds[(3, 8)]["image"]
    torch.manual_seed(1)
    assert torch.equal(a, ds[(3, 8)]["image"])
    assert not torch.equal(a, ds[(4, 8)]["image"]) and not torch.equal(a, ds[(3, 2)]["image"])  # 8 and 2: one image
    sampler = EpochIndexSampler(len(ds), seed=0)
    by_workers = [[b["image"] for b in DataLoader(ds, batch_size=4, sampler=sampler, num_workers=w)] for w in (0, 2)]
    assert all(torch.equal(x, y) for x, y in zip(*by_workers))


def _online(hq_folder, train, crop=64):
    return PairedOnlineDataset([(hq_folder, None)], BFRDegradation.from_preset("difface", downsample_range=[0.8, 4.0]),
                               crop_size=crop, seed=11, train=train)


def test_online_pairs_depend_only_on_seed_epoch_index(hq_folder):
    ds = _online(hq_folder, train=True)
    a, b, c = ds[(0, 3)], ds[(0, 3)], ds[(1, 3)]
    assert a["lq"].shape == a["gt"].shape == (3, 64, 64) and a["lq"].min() >= -1 and a["lq"].max() <= 1
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
    assert not torch.equal(a["lq"], c["lq"])
    assert not torch.equal(ds[(0, 3)]["lq"], ds[(0, 4)]["lq"])
    val = _online(hq_folder, train=False)
    assert torch.equal(val[(0, 2)]["lq"], val[(7, 2)]["lq"])  # validation LQ ignores the epoch


def test_online_pairs_identical_across_workers_and_ranks(hq_folder):
    ds = _online(hq_folder, train=True)

    def collect(workers, replicas):
        out = {}
        for rank in range(replicas):
            sampler = EpochIndexSampler(len(ds), seed=0, num_replicas=replicas, rank=rank)
            sampler.set_epoch(2)
            loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=workers)
            for batch in loader:
                for i, lq in zip(batch["index"].tolist(), batch["lq"]):
                    assert i not in out  # no rank or worker repeats an item
                    out[i] = lq
        return out

    single = collect(0, 1)
    multi = collect(2, 3)
    assert single.keys() == multi.keys() == set(range(len(ds)))
    assert all(torch.equal(single[i], multi[i]) for i in single)


def test_paired_and_lq_folders(tmp_path, hq_folder):
    lq_root = tmp_path / "lq" / "sub"
    lq_root.mkdir(parents=True)
    gt_root = tmp_path / "gt" / "sub"
    gt_root.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rgb8(16, 16, seed=i)).save(lq_root / f"{i}.png")
        Image.fromarray(rgb8(16, 16, seed=10 + i)).save(gt_root / f"{i}.jpg", quality=95)
    ds = PairedFolderDataset(tmp_path / "lq", tmp_path / "gt")
    item = ds[1]
    assert item["path"] == "sub/1" and item["lq"].shape == item["gt"].shape == (3, 16, 16)
    (lq_root / "3.png").write_bytes((lq_root / "0.png").read_bytes())
    with pytest.raises(FileNotFoundError, match="no GT counterpart"):
        PairedFolderDataset(tmp_path / "lq", tmp_path / "gt")
    assert PairedFolderDataset(tmp_path / "gt", tmp_path / "gt")[2]["index"] == 2


def test_real_faces_round_trip(faces_dir, tmp_path):
    for src in sorted((faces_dir / "hq").glob("*.png"))[:2]:
        shutil.copy(src, tmp_path / src.name)
    deg = BFRDegradation.from_preset("difface", hflip_prob=0.0, gray_prob=0.0)
    ds = PairedOnlineDataset([(tmp_path, None)], deg, seed=0, train=False)
    item = ds[0]
    assert item["gt"].shape == (3, 512, 512)
    np.testing.assert_allclose((item["gt"].permute(1, 2, 0).numpy() + 1) / 2,
                               read_image(sorted(tmp_path.glob("*.png"))[0]), atol=1e-6)


def test_validation_on_a_released_lq_folder(tmp_path):
    from latent_pmrf.lightning.bfr_data import BFRDataModule
    from latent_pmrf.lightning.restoration_config import BFRDataConfig
    from latent_pmrf.lightning.trainer_config import ImageSourceConfig

    rng = np.random.default_rng(0)
    pixels = {}
    for name in ("b", "a/c"):
        for kind in ("lq", "gt"):
            (tmp_path / kind / name).parent.mkdir(parents=True, exist_ok=True)
            pixels[kind, name] = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels[kind, name]).save(tmp_path / kind / f"{name}.{'png' if kind == 'lq' else 'jpg'}",
                                                     quality=100)
    cfg = BFRDataConfig(train=[ImageSourceConfig(str(tmp_path / "gt"))], val_dir=str(tmp_path / "gt"),
                        val_lq_dir=str(tmp_path / "lq"), val_limit=None, crop_size=8, num_workers=0, val_batch_size=1)
    dm = BFRDataModule(cfg)
    dm.setup("validate")
    batches = list(dm.val_dataloader())
    assert [b["path"][0] for b in batches] == ["a/c", "b"]
    for batch in batches:
        name = batch["path"][0]
        lq = np.round((batch["lq"][0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)  # [-1, 1] -> 8 bit
        assert batch["lq"].shape == batch["gt"].shape == (1, 3, 16, 24)  # released pairs: no crop
        np.testing.assert_array_equal(lq, pixels["lq", name])  # exactly the released LQ, not a synthetic one
    with pytest.raises(ValueError, match="val_lq_dir needs data.val_dir"):
        BFRDataModule(BFRDataConfig(train=[ImageSourceConfig(str(tmp_path / "gt"))], val_lq_dir=str(tmp_path / "lq")))
