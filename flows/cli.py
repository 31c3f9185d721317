"""The `landmark-sfm` command line: turns a command into a flow call."""
import argparse
import json
import os
import sys

from flows.environment import set_verbose
from flows.settings import FEATURE_KINDS, TRACK_KINDS, Settings, chunk_overlap_for
from sfm_core.cameras import SHARED_CAMERAS
from sfm_core.synthetic import NUISANCES

DEFAULTS = Settings()


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-image-size", type=int, default=DEFAULTS.max_image_size,
                        help="long side, in pixels, that features are computed at (default %(default)s)")
    parser.add_argument("--max-features", type=int, default=DEFAULTS.max_features,
                        help="local features per image, at most (default %(default)s)")
    parser.add_argument("--features", default=DEFAULTS.features, choices=list(FEATURE_KINDS),
                        help="local features and matcher: sift (mutual nearest neighbours), aliked (LightGlue) "
                             "or xfeat (LighterGlue) (default %(default)s)")
    parser.add_argument("--transitive-rounds", type=_rounds, default=DEFAULTS.transitive_rounds, metavar="N",
                        help="rounds of candidate pairs from the verified view graph after retrieval's, in "
                             "collections of 40+ photos; 0 matches retrieval's candidates only (default %(default)s)")
    parser.add_argument("--camera-model", default=DEFAULTS.camera_model,
                        help="COLMAP camera model (default %(default)s)")
    parser.add_argument("--shared-cameras", default=DEFAULTS.shared_cameras, choices=list(SHARED_CAMERAS),
                        help="auto: photos of one size without EXIF share a camera unless their verified "
                             "pairs say they are not one camera; size: they always share one (one camera's "
                             "photos, the frames of a video); exif: a camera per photo unless their EXIF names "
                             "the same camera and focal length (default %(default)s)")
    parser.add_argument("--ba", dest="bundle_adjuster", default=DEFAULTS.bundle_adjuster, choices=["ceres", "theseus"],
                        help="bundle adjustment solver (default %(default)s)")
    parser.add_argument("--device", default=DEFAULTS.device,
                        help="torch device of retrieval, matching and track refinement (default %(default)s)")
    parser.add_argument("--tracks", default=DEFAULTS.tracks, choices=list(TRACK_KINDS),
                        help="query: each query frame's points followed into its verified neighbours, by their "
                             "matches or by correlation where the matcher missed them; pairs: the verified "
                             "matches joined into tracks (default %(default)s)")
    parser.add_argument("--track-refinement", default=DEFAULTS.track_refinement, choices=["correlation", "none"],
                        help="how tracks are refined to sub-pixel from their query frames (default %(default)s)")
    parser.add_argument("--intrinsics", type=_known_cameras, action="extend", default=None, metavar="CAMERA",
                        help="known intrinsics, held fixed: 'MODEL WIDTH HEIGHT PARAMS...' (a line of COLMAP's "
                             "cameras.txt without its id) or a cameras.txt; photos of that size use it")
    parser.add_argument("--refiner-weights", default=None, metavar="PATH",
                        help="refine tracks with the learned refiner of these weights (from `landmark-sfm train`)")
    parser.add_argument("--chunk-size", type=_chunk_size, default=DEFAULTS.chunk_size,
                        help="most images reconstructed together; larger collections are cut into "
                             "overlapping chunks and merged (default %(default)s)")
    parser.add_argument("--dask-address", default=None,
                        help="Dask scheduler to run the chunks on, e.g. tcp://host:8786 "
                             "(default: a local cluster when there are several chunks)")


def _flow_kwargs(args) -> dict:
    return {"max_image_size": args.max_image_size, "max_features": args.max_features, "features": args.features,
            "camera_model": args.camera_model, "shared_cameras": args.shared_cameras,
            "bundle_adjuster": args.bundle_adjuster, "device": args.device,
            "chunk_size": args.chunk_size, "dask_address": args.dask_address,
            "tracks": args.tracks, "track_refinement": args.track_refinement, "refiner_weights": args.refiner_weights,
            "intrinsics": args.intrinsics, "transitive_rounds": args.transitive_rounds}


def _chunk_size(text: str) -> int:
    try:
        chunk_overlap_for(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return int(text)


def _rounds(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of rounds (0, 1, 2, ...)")
    return int(text)


def _known_cameras(text: str) -> list[str]:
    """One camera spec, or every camera of a COLMAP cameras.txt (its ids dropped)."""
    from sfm_core.cameras import parse_camera_spec
    specs = [text]
    if os.path.isfile(text):
        lines = [line.split() for line in open(text, encoding="utf-8") if line.strip() and not line.startswith("#")]
        specs = list(dict.fromkeys(" ".join(parts[1:]) for parts in lines))  # cameras.txt repeats shared ones
    try:
        for spec in specs:
            parse_camera_spec(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return specs


def _storage_options(text: str | None) -> dict | None:
    """--storage-options: a JSON object, passed to fsspec for every URI (or {"s3": {...}, ...})."""
    if text is None:
        return None
    try:
        options = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, like {\"endpoint_url\": \"http://...\"}")
    return options


def cmd_run(args) -> int:
    from storage.sources import list_image_files
    list_image_files(args.source, args.storage_options)  # fail in one line, before Prefect starts, on a bad source
    from flows.reconstruct import reconstruct
    report = reconstruct(args.source, args.out, storage_options=args.storage_options, **_flow_kwargs(args))
    print(format_summary(report))
    return 0


def cmd_eval(args) -> int:
    from storage.colmap_model import evaluate_model_dirs
    metrics = evaluate_model_dirs(args.model, args.truth)
    print(json.dumps(metrics, indent=2) if args.json else format_accuracy(metrics))
    return 0


def format_accuracy(metrics: dict) -> str:
    """`landmark-sfm eval`'s table: one aligned row per figure of evaluate_model_dirs."""
    def figure(value, digits: int = 4) -> str:
        # None: fewer than 3 images in common, or no similarity aligns the centres.
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [("registered", f"{metrics['registered']} of {metrics['reference_images']} reference images")]
    rows += [(f"pose auc@{t}", figure(metrics[f"auc@{t}"])) for t in (3, 5, 10, 30)]
    absolute = metrics["median_center_error"]
    rows.append(("median centre error", "n/a" if absolute is None else f"{absolute:.4g} (reference units)"))
    rows.append(("median centre error / extent", figure(metrics["median_center_error_rel"])))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def cmd_serve(args) -> int:
    from flows.serve import serve_from_args
    return serve_from_args(args, {**_flow_kwargs(args), "storage_options": args.storage_options})


def cmd_demo(args) -> int:
    from flows.demo import run_demo
    print(run_demo(args.out, n_cameras=args.n_cameras)[2])
    return 0


def cmd_synth(args) -> int:
    from flows.synth import make_collection
    nuisances = tuple(n.strip() for n in args.nuisances.split(",") if n.strip()) if args.nuisances else ()
    try:
        made = make_collection(args.out, args.n, args.distractors, args.seed, nuisances=nuisances,
                               one_camera=args.one_camera)
    except ValueError as error:
        print(f"landmark-sfm synth: {error}", file=sys.stderr)
        return 2
    print(f"{made['images']} photos of the landmark and {made['distractors']} distractors in {made['folder']}, "
          f"exact cameras in {made['truth']} ({made['seconds']} s)")
    return 0


def cmd_train(args) -> int:
    from flows.train import train_refiner
    train_refiner(args.out, args.offset_steps, args.end_to_end_steps, resume=args.resume, seed=args.seed)
    print(f"weights: {args.out}")
    return 0


def format_summary(report: dict, accuracy: dict | None = None) -> str:
    totals = report["totals"]
    lines = [
        f"images: {totals['images']} usable, {totals['left_out']} left out",
        f"registered: {totals['registered']} of {totals['images']} in sparse/0 ({totals['models']} model(s))",
        f"points: {totals['points']}, mean reprojection error {totals['mean_reprojection_error_px']} px",
    ]
    if accuracy is not None:
        lines.append("accuracy against the exact cameras: " + ", ".join(
            f"{key} {value}" for key, value in accuracy.items() if key.startswith("auc") or key.endswith("_rel")))
    lines.append("seconds: " + ", ".join(f"{name} {stage['seconds']:.1f}" for name, stage in report["stages"].items())
                 + f", total {totals['seconds']:.1f}")
    verdict = report.get("verdict")
    if verdict is not None:
        reasons = "; ".join(verdict.get("reasons") or [])
        lines.append(f"verdict: {verdict['status']}" + (f" ({reasons})" if reasons else ""))
    # The output is a resolved local folder or a URI (s3://bucket/run): either way the model is below it.
    lines.append(f"model: {report['output'].rstrip('/')}/sparse/0" if totals["models"] else "model: none")
    lines.append(f"outputs: {report['output']}")
    return "\n".join(lines)


DESCRIPTION = "Camera poses and sparse 3D points (COLMAP models) from collections of photos of a place."
EXAMPLES = {
    None: ["landmark-sfm demo", "landmark-sfm run photos/ --out out/", "landmark-sfm eval out/sparse/0 reference/"],
    "run": ["landmark-sfm run photos/ --out out/",
            "landmark-sfm run s3://bucket/photos/ --out s3://bucket/runs/tonight --chunk-size 60"],
    "eval": ["landmark-sfm eval out/sparse/0 reference/", "landmark-sfm eval out/sparse/0 reference/ --json"],
    "serve": ["landmark-sfm serve /srv/photos --out /srv/sfm/site --cron '0 2 * * *'"],
    "demo": ["landmark-sfm demo", "landmark-sfm demo --n-cameras 10 --out /tmp/demo"],
    "synth": ["landmark-sfm synth --n 40 --distractors 5 --out scene/",
              "landmark-sfm synth --n 150 --nuisances no-exif --out no_exif/"],
    "train": ["landmark-sfm train --out refiner.pt", "landmark-sfm train --out refiner.pt --resume"],
}


def _epilog(command: str | None) -> str:
    examples = EXAMPLES[command]
    return ("example:" if len(examples) == 1 else "examples:") + "".join(f"\n  {line}" for line in examples)


def _command(commands, name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does in one line and ends with examples."""
    return commands.add_parser(name, help=summary, description=description or summary, epilog=_epilog(name),
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="also print COLMAP's and Ceres's own log lines (INFO included)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="landmark-sfm", description=DESCRIPTION, epilog=_epilog(None),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = _command(commands, "run", "reconstruct a folder of photos into COLMAP models (sparse/0, ...)")
    run.add_argument("source", help="folder of photos, or a .txt/.parquet file listing them: "
                                    "a path or a URI (s3://, gs://, file://)")
    run.add_argument("--out", required=True, help="output folder: a path or a URI (s3://, gs://, file://)")
    run.add_argument("--storage-options", type=_storage_options, default=None, metavar="JSON",
                     help="fsspec options for the URIs, e.g. '{\"endpoint_url\": \"http://127.0.0.1:9000\"}', "
                          "or one object per protocol: '{\"s3\": {...}, \"gs\": {...}}'")
    _add_settings(run)
    _add_verbose(run)
    run.set_defaults(handler=cmd_run)

    evaluate = _command(commands, "eval", "pose accuracy of a COLMAP model against a reference model, as a table")
    evaluate.add_argument("model", help="COLMAP model folder (text or binary)")
    evaluate.add_argument("truth", help="reference COLMAP model folder")
    evaluate.add_argument("--json", action="store_true", help="print the figures as JSON instead")
    evaluate.set_defaults(handler=cmd_eval)

    from flows.serve import add_serve_arguments
    serve = _command(commands, "serve", "run on a cron schedule as a Prefect deployment (needs PREFECT_API_URL)")
    add_serve_arguments(serve)
    serve.add_argument("--storage-options", type=_storage_options, default=None, metavar="JSON",
                       help="fsspec options for the URIs (as for run)")
    _add_settings(serve)
    _add_verbose(serve)
    serve.set_defaults(handler=cmd_serve)

    demo = _command(commands, "demo", "render the built-in scene, reconstruct it, print a summary")
    demo.add_argument("--out", default="demo_out", help="output folder (default %(default)s)")
    demo.add_argument("--n-cameras", type=int, default=30, help="photos to render (default %(default)s)")
    _add_verbose(demo)
    demo.set_defaults(handler=cmd_demo)

    synth = _command(commands, "synth", "render a landmark-like collection with exact cameras (tests, benchmarks)")
    synth.add_argument("--n", type=int, required=True, help="photos of the landmark")
    synth.add_argument("--out", required=True, help="folder: images/, gt/ (COLMAP text model), distractors.txt")
    synth.add_argument("--distractors", type=int, default=0, help="photos of something else (default 0)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--nuisances", default="", metavar="LIST",
                       help=f"comma-separated, of {', '.join(NUISANCES)}: no-exif writes no EXIF (focal lengths "
                            "still vary); crops makes every photo a crop of its frame resized, keeping the "
                            "frame's EXIF (its focal length then reads 0.56-0.95 of the true one); symmetric "
                            "makes the landmark a building whose two halves look alike; zoom makes a quarter of "
                            "the photos details of a wall, 8-20 degrees across; night makes a fifth of them dark, "
                            "lamp-tinted and noisy (nuisances.json lists which)")
    synth.add_argument("--one-camera", action="store_true",
                       help="every photo from one camera (800x600, 55 degrees across) instead of each with its "
                            "own field of view and one of six sizes")
    synth.set_defaults(handler=cmd_synth)

    train = _command(commands, "train", "train the learned track refiner (about 25 minutes on 2 cores)")
    train.add_argument("--out", required=True, help="weights file to write (a checkpoint goes to <out>.partial)")
    train.add_argument("--offset-steps", type=int, default=1800, help="steps on warped photographs (default %(default)s)")
    train.add_argument("--end-to-end-steps", type=int, default=300,
                       help="steps through bundle adjustment of rendered scenes (default %(default)s)")
    train.add_argument("--resume", action="store_true", help="continue from <out>.partial")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        set_verbose()  # for pycolmap in this process and every process the run starts
    from storage.images import ImageReadError
    from storage.sources import SourceError
    from storage.uris import StorageError
    from flows.tasks import NoUsableImages
    from storage.refiner_weights import WeightsError
    try:
        return args.handler(args)
    except (SourceError, StorageError, NoUsableImages, FileNotFoundError, ImageReadError, WeightsError) as error:
        print(f"landmark-sfm: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m flows.cli
    sys.exit(main())
