"""Reflection removal (SIRR) data in the field's layout, checked and copied to 8-bit PNGs: the
training sets of the usual mix and the Real20 / SIR² / Nature benchmarks, as ERRNet, DSRNet and
RDNet read them (``--base_dir`` of their scripts; DSRNet's README links an all-in-one download).

    python -m data_prep.sirr --input /data/sirr_download --out /data/sirr --voc-list VOC2012_224_train_png.txt
    python -m data_prep.sirr --input /data/sirr --out /tmp/unused --part test --dry-run    # check only

Layout (under --input and under --out; every pair folder holds blended/ + transmission_layer/ with
the same file names):
    test/real20_420                   Real20: 20 pairs of Zhang et al. (the 20 names of ERRNet's
                                      real_test.txt; a folder holding more keeps those 20)
    test/SIR2/SolidObjectDataset      SIR² Objects, 200 pairs
    test/SIR2/PostcardDataset         SIR² Postcard, 199 pairs
    test/SIR2/WildSceneDataset        SIR² Wild, 55 pairs
    test/Nature                       Nature (IBCLN), 20 pairs
    train/real                        Zhang et al.'s 90 real training pairs
    train/nature                      Nature's 200 training pairs
    train/VOCdevkit/VOC2012/PNGImages the VOC2012 images of ERRNet's VOC2012_224_train_png.txt
                                      (15,287 files: 7,643 background/reflection pairs per epoch)

Before anything is written every set is counted: a missing folder, a blended image without its
transmission (or the reverse), or a count other than the one above stops the run with an error
naming the folder and the expected count. --voc-list selects the listed VOC files (each must
exist); without it PNGImages must hold exactly the listed number. --part test|train checks and
copies only that half. --dry-run checks and counts, and writes nothing.

Output: the same relative paths with a .png suffix (JPEG inputs are decoded once, through
latent_pmrf.data.image_io, EXIF orientation applied; PNG pixels are unchanged). The training mix
these folders feed is SIRRDataConfig's default (latent_pmrf/lightning/sirr_data.py,
configs/sirr/usual_mix.yaml). Resumable like every data_prep script (see data_prep/common.py).
Manifest columns: path, sha256, width, height, source, set.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path, PurePosixPath

from latent_pmrf.data.image_io import list_images, read_image, to_uint8
from latent_pmrf.data.sirr_datasets import (SIRR_TEST_SETS, SIRR_TRAIN_PAIR_SETS, VOC_TRAIN_COUNT, VOC_TRAIN_DIR,
                                            SIRRSet, list_pairs)

from .common import BASE_COLUMNS, DataPrepError, Job, Result, Summary, build, cli, make_console, make_parser, write_png

SCRIPT = "sirr"
COLUMNS = (*BASE_COLUMNS, "set")
PARTS = ("all", "test", "train")


def set_files(root: Path, sirr_set: SIRRSet) -> list[Path]:
    """The blended and transmission files of a pair set under ``root``, its count checked."""
    folder = root / sirr_set.path
    try:
        pairs = list_pairs(folder, sirr_set.names)
    except FileNotFoundError as err:
        raise DataPrepError(f"{sirr_set.name}: {err} (expected {sirr_set.count} pairs: {sirr_set.source})") from err
    if len(pairs) != sirr_set.count:
        raise DataPrepError(f"{folder}: {len(pairs)} pairs, expected {sirr_set.count} ({sirr_set.source}); "
                            "check the download")
    return [path for pair in pairs for path in pair]


def voc_files(root: Path, voc_list: Path | None) -> list[Path]:
    """The VOC2012 training images: those of ERRNet's list (``voc_list``), or the whole folder."""
    folder = root / VOC_TRAIN_DIR
    if not folder.is_dir():
        raise DataPrepError(f"VOC training folder not found: {folder} (expected {VOC_TRAIN_COUNT} PNGs of ERRNet's "
                            "VOC2012_224_train_png.txt)")
    if voc_list is None:
        files = list_images(folder)
        if len(files) != VOC_TRAIN_COUNT:
            raise DataPrepError(f"{folder}: {len(files)} images, expected {VOC_TRAIN_COUNT} (ERRNet's "
                                "VOC2012_224_train_png.txt); pass that list as --voc-list to select them")
        return files
    if not voc_list.is_file():
        raise DataPrepError(f"--voc-list not found: {voc_list}")
    names = [line.strip() for line in voc_list.read_text().splitlines() if line.strip()]
    if len(names) != VOC_TRAIN_COUNT:
        raise DataPrepError(f"--voc-list {voc_list} names {len(names)} files, expected {VOC_TRAIN_COUNT} "
                            "(ERRNet's VOC2012_224_train_png.txt)")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataPrepError(f"{folder}: {len(missing)} of the {len(names)} files of {voc_list} are missing, e.g. "
                            f"{', '.join(missing[:5])}")
    return [folder / n for n in names]


def collect(root: Path, part: str, voc_list: Path | None) -> dict[str, list[Path]]:
    """Set name -> its input files, every count checked (see the module docstring)."""
    sets = {}
    if part in ("all", "test"):
        sets.update({f"test/{s.name}": set_files(root, s) for s in SIRR_TEST_SETS})
    if part in ("all", "train"):
        sets.update({f"train/{s.name}": set_files(root, s) for s in SIRR_TRAIN_PAIR_SETS})
        sets["train/voc"] = voc_files(root, voc_list)
    return sets


def output_name(key: str) -> str:
    return PurePosixPath(key).with_suffix(".png").as_posix()


def set_name(key: str) -> str:
    """The manifest's ``set`` of an input path (relative to --input): test/real20, train/voc, ..."""
    for part, sets in (("test", SIRR_TEST_SETS), ("train", SIRR_TRAIN_PAIR_SETS)):
        for s in sets:
            if key.startswith(s.path + "/"):
                return f"{part}/{s.name}"
    return "train/voc"


def process(job: Job, out_dir: Path) -> Result:
    image = to_uint8(read_image(job.source), value_range=(0, 1))
    return Result(job, rows=[write_png(out_dir, job.outputs[0], image, job.key) | dict(set=set_name(job.key))])


def main(argv: list[str] | None = None) -> Summary:
    parser = make_parser(SCRIPT, __doc__, "a SIRR data root (test/ and train/ as listed above)")
    parser.add_argument("--voc-list", type=Path, metavar="FILE",
                        help="ERRNet's VOC2012_224_train_png.txt: copy only the listed VOC images")
    parser.add_argument("--part", choices=PARTS, default="all", help="check and copy test/, train/ or both")
    args = parser.parse_args(argv)
    if args.out.resolve().is_relative_to(args.input.resolve()):
        raise DataPrepError(f"the output folder {args.out} is inside the input folder {args.input}; "
                            "choose another --out")
    console = make_console()
    sets = collect(args.input, args.part, args.voc_list)
    for name, files in sets.items():
        console.print(f"{name}: {len(files)} files", highlight=False)
    keys = sorted(path.relative_to(args.input).as_posix() for files in sets.values() for path in files)
    writer_of: dict[str, str] = {}
    for key in keys:
        other = writer_of.setdefault(output_name(key), key)
        if other != key:
            raise DataPrepError(f"inputs {other} and {key} under {args.input} would both be written to "
                                f"{output_name(key)}; remove one of them")
    jobs = [Job(i, args.input / key, key, (output_name(key),)) for i, key in enumerate(keys)]
    voc_list_hash = hashlib.sha256(args.voc_list.read_bytes()).hexdigest() if args.voc_list else ""
    settings = {"format": "png", "part": args.part, "voc_list_sha256": voc_list_hash}
    return build(args, SCRIPT, settings, COLUMNS, jobs, partial(process, out_dir=args.out), console)


if __name__ == "__main__":
    cli(main)
