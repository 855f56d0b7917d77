"""``latent-pmrf`` command line: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

console = Console(stderr=True)


def _train(args: argparse.Namespace) -> None:
    from ..lightning.tasks import load_task_config, train

    task, cfg = load_task_config(args.config, args.overrides)
    out = train(task, cfg)
    console.print(f"[green]done[/green]: run directory {out}")


def _export_vae(args: argparse.Namespace) -> None:
    from ..lightning.export import export_vae

    out, used_ema = export_vae(args.ckpt, args.out_dir)
    console.print(f"wrote {'EMA' if used_ema else 'live (no EMA in checkpoint)'} Sim-VAE weights to {out}")


def _latent_stats(args: argparse.Namespace) -> None:
    from ..flow.latent_stats import estimate_latent_stats

    stats = estimate_latent_stats(args.vae, args.images, limit=args.limit, crop_size=args.crop_size,
                                  batch_size=args.batch_size, device=args.device, write=args.write)
    console.print_json(data=stats)


def _vae_equivariance(args: argparse.Namespace) -> None:
    from .vae_equivariance import measure_equivariance, print_equivariance

    rows = measure_equivariance(args.vae, args.background, args.reflection, n=args.n, seed=args.seed,
                                crop_size=args.crop_size, batch_size=args.batch_size, device=args.device)
    print_equivariance(rows, Console(width=160))


def _quickstart(args: argparse.Namespace) -> None:
    from .quickstart import run_quickstart

    steps = {"max_steps": args.steps, "pm_steps": args.pm_steps, "flow_steps": args.flow_steps}
    run_quickstart(args.out, fresh=args.fresh, **{k: v for k, v in steps.items() if v is not None})


def _degrade_preview(args: argparse.Namespace) -> None:
    from .degrade_preview import degrade_preview

    out = degrade_preview(args.image, args.out, preset=args.preset, n=args.n, seed=args.seed, size=args.size,
                          config=args.config)
    console.print(f"wrote {args.n} degradations of {args.image} to {out}")


def _restore(args: argparse.Namespace) -> None:
    from .restore import DEFAULT_MAX_PIXELS, EXIT_PARTIAL, restore

    summary = restore(args.ckpt, args.input, args.output, steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                      device=args.device, save_posterior_mean=args.save_posterior_mean, console=console,
                      sampler=args.sampler, branches=args.branches, branch_steps=args.branch_steps, scorer=args.scorer,
                      task=args.task, faces=_face_options(args), overwrite=args.overwrite,
                      skip_existing=args.skip_existing, keep_gray=args.keep_gray,
                      max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels,
                      compile=args.compile)
    if summary.failed:
        sys.exit(EXIT_PARTIAL)


def _face_options(args: argparse.Namespace):
    """``restore --faces detect``'s options (None for aligned faces, where giving one is an error)."""
    given = {"detector": args.detector, "only_center_face": args.only_center_face or None, "upscale": args.upscale,
             "min_face_size": args.min_face_size, "skip_no_face": args.skip_no_face or None}
    given = {name: value for name, value in given.items() if value is not None}
    if args.faces == "aligned":
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{flags}: for whole photos, with --faces detect (--faces aligned takes aligned faces)")
        return None
    from .restore_faces import FaceOptions

    return FaceOptions(**given)


def _demo(args: argparse.Namespace) -> None:
    from .demo import launch_demo  # imports gradio only when launched

    try:
        launch_demo(args.ckpt, device=args.device, host=args.host, port=args.port, steps=args.steps,
                    detector=args.detector)
    except ImportError as err:  # gradio missing: the message says how to install it
        from rich.markup import escape  # the message's `.[demo]` is not rich markup

        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        sys.exit(2)


def _reconstruct(args: argparse.Namespace) -> None:
    from .reconstruct import reconstruct
    from .restore import DEFAULT_MAX_PIXELS, EXIT_PARTIAL

    summary = reconstruct(args.vae, args.input, args.output, batch_size=args.batch_size, device=args.device,
                          quantize=args.quantize, console=console, overwrite=args.overwrite,
                          skip_existing=args.skip_existing,
                          max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels)
    if summary.failed:
        sys.exit(EXIT_PARTIAL)


def _plot_convergence(args: argparse.Namespace) -> None:
    from ..analysis.convergence import plot_convergence

    result = plot_convergence(args.runs, args.metric, args.out, labels=args.labels,
                              lower_is_better=False if args.higher_is_better else None)
    print(json.dumps(result, indent=2, allow_nan=False))  # stdout: machine-readable; notes go to stderr
    console.print(f"wrote {args.out}")


def _plot_pd(args: argparse.Namespace) -> None:
    from ..analysis.pareto import plot_pd

    result = plot_pd(args.results, args.x, args.y, args.out, label=args.label, references=args.reference)
    print(json.dumps(result, indent=2, allow_nan=False))
    console.print(f"Pareto front: {', '.join(result['front'])}\nwrote {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from ..metrics.evaluate import check_results_path, evaluate_folders
    from ..metrics.results import write_results
    from .restore import DEFAULT_MAX_PIXELS, EXIT_PARTIAL

    check_results_path(args.out)  # before any metric is computed
    if args.protocol == "sirr":
        from ..metrics.sirr import evaluate_sirr

        if args.metrics is not None and {m.strip() for m in args.metrics.split(",")} - {"psnr", "ssim"}:
            raise ValueError(f"--protocol sirr computes psnr and ssim only, got --metrics {args.metrics}")
        if not args.gt:
            raise ValueError("--protocol sirr needs --gt (a pair folder or a test root)")
        unused = [flag for flag, value in (("--posterior-mean", args.posterior_mean), ("--reference", args.reference),
                                           ("--fid-stats", args.fid_stats), ("--max-pixels", args.max_pixels))
                  if value]
        if unused:
            raise ValueError(f"--protocol sirr takes no {', '.join(unused)}")
        result = evaluate_sirr(args.pred, args.gt, label=args.label, skip_unreadable=True)
    else:
        metrics = args.metrics or DEFAULT_EVALUATE_METRICS
        result = evaluate_folders(args.pred, args.gt, args.posterior_mean, [m.strip() for m in metrics.split(",")],
                                  reference=args.reference, fid_stats=args.fid_stats, device=args.device,
                                  batch_size=args.batch_size, label=args.label, skip_missing=args.skip_missing,
                                  skip_unreadable=True,
                                  max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels)
    paths = write_results(result, args.out)
    console.print_json(data={"method": result.label, **result.summary})
    for name, reason in result.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {name}: {reason}")
    for reason in result.failed.values():
        console.print(f"[yellow]skipped[/yellow] {reason}", soft_wrap=True)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    if result.failed:
        console.print(f"[yellow]{len(result.failed)} file(s) could not be read: the metrics cover "
                      f"{result.meta['images']} image(s), not the whole folder (the results row records "
                      f"images={result.meta['images']})[/yellow]", soft_wrap=True)
        sys.exit(EXIT_PARTIAL)


def _synth_reflection(args: argparse.Namespace) -> None:
    from .synth_reflection import synth_reflection

    out = synth_reflection(args.background, args.reflection, args.output, n=args.n, seed=args.seed,
                           preset=args.preset, size=args.size)
    console.print(f"wrote {args.n} blended/transmission_layer/reflection_layer triplets to {out}")


def _weights_check(args: argparse.Namespace) -> None:
    from rich.table import Table

    from ..weights import check_table

    rows = check_table()
    table = Table(title="pretrained files (nothing is downloaded; put each file at its path)")
    for col in ("key", "what", "present", "path", "needed_by"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["key"], r["what"], "[green]yes[/green]" if r["present"] == "yes" else "[red]no[/red]",
                      r["path"], r["needed_by"])
    Console(width=200).print(table)
    missing = [r["key"] for r in rows if r["present"] != "yes"]
    console.print(f"{len(rows) - len(missing)} of {len(rows)} present" + (f"; missing: {', '.join(missing)}" if missing else ""))


def _model_info(args: argparse.Namespace) -> None:
    from ..analysis.model_info import model_info

    info = model_info(args.preset, args.resolution)
    if args.json:
        print(json.dumps(info.as_dict()))
        return
    console.print(f"{info.preset} ({info.family}): {info.parameters / 1e6:.2f} M parameters "
                  f"({info.trainable_parameters:,} trainable), {info.gflops:.1f} GFLOPs per forward "
                  f"on input {tuple(info.input_shape)}")


def _metrics(args: argparse.Namespace) -> None:
    from rich.table import Table

    from ..metrics.registry import SPECS

    table = Table(title="metrics (latent_pmrf/metrics/registry.py)")
    for col in ("name", "group", "better", "reference", "weights"):
        table.add_column(col, overflow="fold")
    for name, spec in SPECS.items():
        info = spec.info
        table.add_row(name, spec.group, "higher" if info.higher_is_better else "lower", info.reference,
                      ", ".join(info.weights) or "-")
    Console(width=160).print(table)


def _table(args: argparse.Namespace) -> None:
    from .restore import EXIT_PARTIAL
    from .table import table_from_args

    markdown, paths, failed = table_from_args(args, console)
    print(markdown, end="")
    console.print("wrote " + ", ".join(str(p) for p in paths))
    if failed:
        console.print(f"[yellow]{len(failed)} file(s) could not be read and were left out: the rows they belong "
                      "to cover fewer images than the set (their results CSV's images column)[/yellow]", soft_wrap=True)
        sys.exit(EXIT_PARTIAL)


DEVICE_HELP = "cpu, cuda, cuda:N, ... (default auto: cuda when available)"
DEFAULT_EVALUATE_METRICS = "psnr,ssim,ms_ssim,lpips_alex,dists,deg,lmd,musiq,qalign,fid,fd_dinov2,mmd_dinov2"
# evaluate --protocol choices: the keys of metrics/evaluate.py's PROTOCOLS (checked by the tests;
# written here so that --help imports no torch)
EVALUATE_PROTOCOLS = ("default", "sirr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latent-pmrf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config (resumes from last.ckpt)")
    p.add_argument("config", help="YAML file under configs/")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. trainer.max_steps=1000 data.batch_size=4")
    p.set_defaults(func=_train)

    p = sub.add_parser("export-vae", help="write a VAE training checkpoint's EMA weights in the official format")
    p.add_argument("ckpt")
    p.add_argument("out_dir")
    p.set_defaults(func=_export_vae)

    p = sub.add_parser("vae-latent-stats", help="estimate a VAE's latent shift_factor / scaling_factor from images")
    p.add_argument("--vae", required=True, help="Sim-VAE snapshot directory (config.json + safetensors)")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--write", action="store_true", help="store the factors in the snapshot's config.json")
    p.set_defaults(func=_latent_stats)

    p = sub.add_parser("vae-equivariance",
                       help="a VAE's relative equivariance error and PSNR on α-mixtures, before/after (GenSIRR Table 1)")
    p.add_argument("--vae", required=True, nargs="+", metavar="DIR",
                   help="one VAE, or two (before and after fine-tuning): Sim-VAE snapshot, diffusers directory, "
                        "HF repo id, or " + "|".join(_baseline_vae_names()))
    p.add_argument("--background", required=True, help="folder of background images (searched recursively)")
    p.add_argument("--reflection", required=True, help="folder of reflection images (may be the background folder)")
    p.add_argument("--n", type=int, default=64, help="number of mixtures (I = (1-α)B + αR, α ~ U[0, 1])")
    p.add_argument("--seed", type=int, default=0, help="mixture i's pair and α come from SeedSequence([seed, i])")
    p.add_argument("--crop-size", type=int, default=256, help="centre crops of this side")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=_vae_equivariance)

    p = sub.add_parser("quickstart", help="Sim-VAE, posterior mean and Latent-PMRF on scikit-image's photos (CPU)")
    p.add_argument("--out", default="runs/quickstart")
    # defaults: VAE_STEPS, PM_STEPS and FLOW_STEPS in quickstart.py, with the measurements behind them
    p.add_argument("--steps", type=int, help="Sim-VAE training steps")
    p.add_argument("--pm-steps", type=int, help="posterior-mean training steps")
    p.add_argument("--flow-steps", type=int, help="Latent-PMRF (flow) training steps")
    p.add_argument("--fresh", action="store_true",
                   help="remove the quickstart's earlier outputs in --out first (else a re-run continues them, and "
                        "one made with other settings is refused)")
    p.set_defaults(func=_quickstart)

    p = sub.add_parser("degrade-preview", help="a grid of synthetic LQ samples of one HQ image, with their parameters")
    p.add_argument("--image", required=True, help="HQ image file")
    p.add_argument("--out", required=True, help="PNG file to write")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", default="difface", help="degradation preset (difface, gfpgan)")
    which.add_argument("--config", help="YAML file of DegradationConfig fields (optionally with preset:)")
    p.add_argument("--n", type=int, default=16, help="number of samples (grid of ceil(sqrt(n)) columns after the GT)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses SeedSequence([seed, i])")
    p.add_argument("--size", type=int, help="centre-crop and resize to size x size (default: keep if <= 512, else 512)")
    p.set_defaults(func=_degrade_preview)

    p = sub.add_parser("restore", help="restore a face image or a folder with a trained (latent) PMRF checkpoint")
    p.add_argument("--ckpt", required=True,
                   help="flow training checkpoint (.ckpt; EMA weights are used), or the folder of PMRF's released "
                        "model (ohayonguy/PMRF_blind_face_image_restoration: model.safetensors + config.json)")
    p.add_argument("--input", required=True, help="image file or folder (searched recursively)")
    p.add_argument("--output", required=True, help="writes OUTPUT/restored/ (and OUTPUT/posterior_mean/)")
    p.add_argument("--steps", type=int, default=25, help="Euler steps (paper: 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--save-posterior-mean", action="store_true", help="also write f(y), needed for IndRMSE")
    p.add_argument("--sampler", choices=["uniform", "flow_match_euler"],
                   help="Euler time grid (default: the checkpoint's `sampler`): uniform (PMRF) or the official "
                        "pipeline's FlowMatchEulerDiscreteScheduler grid")
    p.add_argument("--branches", type=int, default=1, metavar="k",
                   help="early-branching selection (GenSIRR's DEBS): k source draws per image, only the one "
                        "--scorer rates best goes on to the last step (default 1: plain sampling)")
    p.add_argument("--branch-steps", type=int, default=1, metavar="m",
                   help="Euler steps the k draws take together before they are scored (default 1)")
    p.add_argument("--scorer", metavar="NAME",
                   help="reference-free scorer of the draws' one-step end points: depth (GenSIRR's) or another "
                        "name of the table in latent_pmrf/flow/scorers.py (the no-reference metrics of "
                        "`latent-pmrf metrics`, ...); an unknown name lists them")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--skip-existing", action="store_true", help="keep outputs that already exist, do the rest")
    p.add_argument("--keep-gray", action=argparse.BooleanOptionalAction, default=True,
                   help="a gray input gives a gray output (default on)")
    p.add_argument("--max-pixels", type=int,
                   help="skip (and report) images above this many pixels, read from their header (default 2048²)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks (velocity, VAE, f(y)): faster for folders of same-size images "
                        "after the first, which compiles; outputs equal to float rounding")
    p.add_argument("--task", help="what a multi-task model restores: bfr (faces) or sirr (reflections); "
                                   "default its first task")
    p.add_argument("--faces", choices=["aligned", "detect"], default="aligned",
                   help="aligned (default): each input is one aligned face; detect: whole photos, every face found "
                        "is aligned to the FFHQ 512 template, restored and pasted back (writes OUTPUT/restored/ "
                        "photos and OUTPUT/faces/{aligned,restored}/ crops)")
    p.add_argument("--detector", choices=list(_face_detectors()),
                   help="--faces detect: face detector (default mtcnn; `latent-pmrf weights check` shows their files)")
    p.add_argument("--only-center-face", action="store_true", help="--faces detect: restore only the central face")
    p.add_argument("--upscale", type=int, metavar="N",
                   help="--faces detect: write photos N times larger, the background by bicubic (default 1)")
    p.add_argument("--min-face-size", type=int, metavar="PX",
                   help="--faces detect: ignore faces whose box is smaller than PX pixels (default 20)")
    p.add_argument("--skip-no-face", action="store_true",
                   help="--faces detect: leave out photos without a face (default: reported and copied through)")
    p.set_defaults(func=_restore)

    p = sub.add_parser("demo", help="restore photos in the browser (Gradio): input | posterior mean | restoration")
    p.add_argument("--ckpt", required=True, help="what restore --ckpt takes (flow checkpoint, pipeline folder, PMRF's "
                                                 "released model)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default: this machine only; 0.0.0.0 to reach it from others)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--steps", type=int, default=25, help="the page's initial Euler steps (paper: 25)")
    p.add_argument("--detector", choices=list(_face_detectors()), default="mtcnn",
                   help="face detector of the page's `detect` mode")
    p.set_defaults(func=_demo)

    p = sub.add_parser("reconstruct", help="a VAE's reconstructions (posterior mode) of a folder, for Tables 1-3")
    p.add_argument("--vae", required=True,
                   help="Sim-VAE snapshot or diffusers AutoencoderKL directory, HF repo id, or one of "
                        + "|".join(_baseline_vae_names()))
    p.add_argument("--input", required=True, help="image file or folder (searched recursively)")
    p.add_argument("--output", required=True, help="writes OUTPUT/<relative path>.png, the input sizes")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--quantize", choices=["floor", "round"], default="floor",
                   help="8-bit levels: floor as the official test_vae.py (paper numbers), or round")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--skip-existing", action="store_true", help="keep outputs that already exist, do the rest")
    p.add_argument("--max-pixels", type=int,
                   help="skip (and report) images above this many pixels, read from their header (default 2048²)")
    p.set_defaults(func=_reconstruct)

    p = sub.add_parser("plot-convergence", help="metric vs training step for runs, with the speed-up over the first")
    p.add_argument("runs", nargs="+", help="run directories (csv/version_*/metrics.csv) or CSV files; first = baseline")
    p.add_argument("--metric", required=True, help="logged column, e.g. val/fid")
    p.add_argument("--out", required=True)
    p.add_argument("--labels", nargs="+", help="one per run (default: folder names)")
    p.add_argument("--higher-is-better", action="store_true",
                   help="for a column the metric table does not know (its direction is read from the table)")
    p.set_defaults(func=_plot_convergence)

    p = sub.add_parser("plot-pd", help="perception-distortion plane with the Pareto front from a results CSV")
    p.add_argument("results", help="CSV with one row per method / checkpoint / step count")
    p.add_argument("--x", default="psnr", help="distortion column (psnr, ind_rmse, ...)")
    p.add_argument("--y", default="fid", help="perception column (fid, ...)")
    p.add_argument("--label", default="method", help="column naming each point")
    p.add_argument("--reference", nargs="+", default=[], metavar="LABEL",
                   help="rows that are reference points, not methods (drawn hollow, never on the front)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_plot_pd)

    p = sub.add_parser("evaluate", help="metrics of a folder of restorations; writes CSV + JSON + markdown")
    p.add_argument("--pred", required=True, help="restored images (searched recursively)")
    p.add_argument("--gt", help="ground truth, same relative file names (any image extension)")
    p.add_argument("--posterior-mean", help="posterior-mean outputs f(y), same file names (for ind_rmse)")
    p.add_argument("--metrics", help="comma-separated metric names (`latent-pmrf metrics` lists them; default "
                                     f"{DEFAULT_EVALUATE_METRICS}; --protocol sirr: psnr,ssim)")
    p.add_argument("--protocol", choices=EVALUATE_PROTOCOLS, default="default",
                   help="default: the metric table's conventions; sirr: Real20/SIR2/Nature's (GT at the floor "
                        "multiple of 32, per-channel scikit-image PSNR/SSIM, per-set and image-weighted means; "
                        "--gt is a pair folder or a test root, predictions in --pred/<set>/)")
    p.add_argument("--reference", help="image set for fid / fd_dinov2 / mmd_dinov2 (default: --gt); features cached")
    p.add_argument("--fid-stats", choices=["ffhq"], help="FID against clean-fid's FFHQ-70k 512² statistics")
    p.add_argument("--out", default="results.csv", help="results CSV (one row per --label; rows are kept)")
    p.add_argument("--label", help="row name in the results (default: the --pred folder name)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--skip-missing", action="store_true",
                   help="skip metrics whose weights or inputs are absent (listed with the reason) instead of failing")
    p.add_argument("--max-pixels", type=int,
                   help="skip (and report) images above this many pixels, read from their header (default 2048²)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("synth-reflection",
                       help="a synthetic reflection-removal set: blended/ + transmission_layer/ + reflection_layer/")
    p.add_argument("--background", required=True, help="transmission (background) images, searched recursively")
    p.add_argument("--reflection", required=True, help="reflection images (may be the --background folder)")
    p.add_argument("--output", required=True, help="writes OUTPUT/{blended,transmission_layer,reflection_layer}/")
    p.add_argument("--n", type=int, required=True, help="number of images (background i mod count)")
    p.add_argument("--seed", type=int, default=0, help="image i uses SeedSequence([seed, i])")
    p.add_argument("--preset", default="dsrnet", help="synthesis preset (data/reflection.py; default %(default)s)")
    p.add_argument("--size", type=int, help="centre-crop to size x size (default: the background's size)")
    p.set_defaults(func=_synth_reflection)

    p = sub.add_parser("metrics", help="list the metric table: names, groups, directions, weight files")
    p.set_defaults(func=_metrics)

    p = sub.add_parser("weights", help="pretrained files: `weights check` lists where each is expected and if present")
    p.add_argument("action", choices=["check"])
    p.set_defaults(func=_weights_check)

    p = sub.add_parser("model-info", help="parameters and forward GFLOPs of a model preset (Table 4's #Params)")
    p.add_argument("preset", help="a Sim-VAE, SwinIR, HDiT or LooUFormer preset, e.g. latent_pmrf_official")
    p.add_argument("--resolution", type=int, default=512, help="image side (velocity nets on latents: side / 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_model_info)

    p = sub.add_parser("table", help="a paper table (1-4) with our numbers beside the published ones (.md + .csv)")
    p.add_argument("number", type=int, choices=[1, 2, 3, 4], help="paper table")
    p.add_argument("--out", required=True, help="writes OUT.md and OUT.csv")
    p.add_argument("--results", help="finished results CSV of a one-part table (Table 4: restoration)")
    p.add_argument("--run", action="append", metavar="LABEL=DIR",
                   help="evaluate DIR as row LABEL first (one-part table; repeatable)")
    for part in ("reconstruction", "restoration"):
        p.add_argument(f"--{part}-results", help=f"finished results CSV of the {part} part (Tables 1-3)")
        p.add_argument(f"--{part}-run", action="append", metavar="LABEL=DIR",
                       help=f"evaluate DIR as {part} row LABEL first (repeatable; results go to the "
                            f"--{part}-results CSV, default OUT.{part}-results.csv)")
    p.add_argument("--row", action="append", metavar="PAPER_ROW=LABEL",
                   help='our results label of a paper row, e.g. "Sim-VAE f8c32=my_run" (default: same name)')
    p.add_argument("--gt", help="ground truth for the runs (same relative file names)")
    p.add_argument("--reference", help="image set for fid / fd_dinov2 / mmd_dinov2 (default: --gt)")
    p.add_argument("--fid-stats", choices=["ffhq"], help="FID against clean-fid's FFHQ-70k 512² statistics")
    p.add_argument("--metrics", help="comma-separated metrics for the runs (default: the table's metric columns)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--skip-missing", action="store_true",
                   help="skip metrics whose weights or inputs are absent instead of failing")
    p.set_defaults(func=_table)
    return parser


def _face_detectors() -> tuple[str, ...]:
    from ..faces.detection import DETECTORS  # numpy only: --help stays free of torch

    return tuple(DETECTORS)


def _baseline_vae_names() -> tuple[str, ...]:
    from ..weights import BASELINE_VAE_RELEASES

    return tuple(BASELINE_VAE_RELEASES)


def resolve_device(name: str) -> str:
    """``auto`` -> cuda when available, else cpu; a CUDA device on a machine without one is a
    clear error before any work."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA device (torch {torch.__version__}); "
                         "use --device cpu")
    return name


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)  # --help exits here, before torch is imported
    from ..atomic import CheckpointWriteError
    from ..data.image_io import ImageReadError

    try:
        if getattr(args, "device", None) is not None:
            args.device = resolve_device(args.device)
        args.func(args)
    except (FileNotFoundError, ValueError, ImageReadError, CheckpointWriteError) as err:
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)  # one line, however long
        sys.exit(2)


if __name__ == "__main__":
    main()
