"""Track refinement and bundle adjustment solvers on the photo sets with ground truth, in one run.

    python benchmarks/refinement.py --weights refiner.pt                 # fountain_p11, temple_sparse_ring, pipes
    python benchmarks/refinement.py --weights refiner.pt --sets fountain_p11 --data ../shared/data
    python benchmarks/refinement.py --weights refiner.pt --repeats 5     # + how far AUC@3 moves by chance

For each set: the pipeline with no refinement, the geometric (correlation) refinement and the
learned one (--weights), reporting the final model's mean reprojection error, AUC@3/@5
against the truth and the mean track length, and the tracks' error under the true cameras
(every track triangulated from the ground-truth cameras and reprojected: the median and 75th
percentile over its observations, in pixels; the same tracks in all three runs). The runs
share their features and matches (a copy of the first output: those stages' keys do not
depend on the refinement). Then Ceres and Theseus adjust the same triangulated model (the
geometric run's, before refinement): seconds, mean reprojection error and final robust cost.

--repeats N re-runs each refinement's later stages (cameras, triangulation, bundle adjustment)
N times from its own tracks, every observation moved by Gaussian noise of --jitter-px (0.1 px
per axis, seeds 1..N), and reports AUC@3's mean, minimum and maximum over the repeats. A set
whose poses hang on a few weak links (pipes: four images joined to the rest by 15-36 inliers
a pair) moves by a bin of the AUC or more under noise far below the tracks' own error
(0.2-0.3 px): differences between refiners smaller than that spread are chance.
"""
import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)

GT_SETS = ("fountain_p11", "temple_sparse_ring", "pipes")


def run_set(data: Path, name: str, weights: str, workdir: Path, repeats: int = 0, jitter_px: float = 0.1) -> list[dict]:
    import pycolmap
    from flows.reconstruct import reconstruct
    from storage.colmap_model import evaluate_model_dirs

    rows, previous = [], None
    for refinement in ("none", "correlation", "learned"):
        out = workdir / f"{name}-{refinement}"
        shutil.rmtree(out, ignore_errors=True)
        if previous is not None:
            shutil.copytree(previous, out)  # features and matches are reused
        choice = {"refiner_weights": weights} if refinement == "learned" else {"track_refinement": refinement}
        report = reconstruct(str(data / name / "images"), str(out), **choice)
        model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
        accuracy = evaluate_model_dirs(out / "sparse" / "0", data / name / "gt")
        chunk_seconds = sum(report["stages"][s]["seconds"] for s in ("tracks", "cameras", "triangulation",
                                                                         "bundle-adjustment"))
        true_errors = errors_under_truth(out, data / name / "gt")
        rows.append({"set": name, "refinement": refinement, "registered": f"{accuracy['registered']}/"
                     f"{accuracy['reference_images']}", "reproj_px": model.compute_mean_reprojection_error(),
                     "auc@3": accuracy["auc@3"], "auc@5": accuracy["auc@5"],
                     "track_length": model.compute_mean_track_length(), "points": model.num_points3D(),
                     "true_track_err_median_px": float(np.nanmedian(true_errors)),
                     "true_track_err_p75_px": float(np.nanpercentile(true_errors, 75)), "chunk_s": chunk_seconds})
        if repeats:
            aucs = [repeat_from_jittered_tracks(out, data / name, choice, seed, jitter_px) for seed in range(1, repeats + 1)]
            rows[-1].update({"auc@3_repeats_mean": float(np.mean(aucs)), "auc@3_repeats_min": float(np.min(aucs)),
                             "auc@3_repeats_max": float(np.max(aucs))})
        previous = out
    return rows


def repeat_from_jittered_tracks(out: Path, set_dir: Path, choice: dict, seed: int, jitter_px: float) -> float:
    """AUC@3 of the run in `out` redone from its tracks moved by Gaussian noise (jitter_px per
    axis, this seed): a copy of `out` whose later stages' checkpoints are forgotten, so that
    only they run again."""
    import zarr
    from flows.reconstruct import reconstruct
    from storage.colmap_model import evaluate_model_dirs
    from storage.track_store import read_tracks, write_tracks

    copy = out.parent / f"{out.name}-repeat-{seed}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy)
    rng = np.random.default_rng(seed)
    tracks_path = str(copy / "tracks.zarr")
    for group in sorted(zarr.open_group(tracks_path, mode="r").group_keys()):
        image_ids, tracks = read_tracks(tracks_path, group)
        jitter = rng.normal(0, jitter_px, tracks.xy.shape) * tracks.visibility[..., None]
        write_tracks(tracks_path, group, image_ids, replace(tracks, xy=tracks.xy + jitter.astype(np.float32)))
    forget_later_stages(copy)
    reconstruct(str(set_dir / "images"), str(copy), **choice)
    auc = evaluate_model_dirs(copy / "sparse" / "0", set_dir / "gt")["auc@3"]
    shutil.rmtree(copy)
    return auc


def forget_later_stages(out: Path) -> None:
    """Drop the checkpoints (and Prefect's cached results) of the stages after the tracks."""
    from flows.checkpointing import results_storage
    from flows.layout import OutputLayout
    from flows.reconstruct import STAGES
    from storage.checkpoints import CheckpointStore

    later = STAGES[STAGES.index("tracks") + 1:]
    results = results_storage(OutputLayout(out))
    for path in CheckpointStore(out).folder.glob("*.json"):
        if path.stem.startswith(later):  # a chunk's checkpoint is "<stage>-chunk-<n>.json"
            (results / json.loads(path.read_text())["key"]).unlink(missing_ok=True)
            path.unlink()


def errors_under_truth(out: Path, truth_dir: Path) -> np.ndarray:
    """Reprojection errors of every track observation of the run in `out` under the true
    cameras of truth_dir (sfm_core.evaluation.track_errors_under_truth), all chunks together."""
    import pycolmap
    import zarr
    from sfm_core.evaluation import track_errors_under_truth
    from storage.manifest import read_manifest
    from storage.track_store import read_tracks

    truth = pycolmap.Reconstruction(str(truth_dir))
    true_image = {image.name: image for image in truth.images.values() if image.has_pose}
    name_of_id = {row.image_id: row.name for row in read_manifest(str(out / "manifest.parquet")) if row.status == "ok"}
    errors = []
    for group in sorted(zarr.open_group(str(out / "tracks.zarr"), mode="r").group_keys()):
        image_ids, tracks = read_tracks(str(out / "tracks.zarr"), group)
        images = [true_image.get(name_of_id[int(i)]) for i in image_ids]
        cameras = [None if image is None else truth.camera(image.camera_id) for image in images]
        poses = [None if image is None else (image.cam_from_world().rotation.matrix(), image.cam_from_world().translation)
                 for image in images]
        errors.append(track_errors_under_truth(tracks.xy, tracks.visibility, cameras, poses))
    return np.concatenate(errors)


def solver_rows(workdir: Path, name: str) -> list[dict]:
    import pycolmap
    from benchmarks.bundle_adjusters import compare
    from storage.colmap_model import model_dirs

    folder = model_dirs(workdir / f"{name}-correlation" / "stages" / "triangulation" / "chunk-0")[0]
    return compare(name, lambda: pycolmap.Reconstruction(str(folder)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="the learned refiner's weights (landmark-sfm train)")
    parser.add_argument("--sets", nargs="+", default=list(GT_SETS))
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--repeats", type=int, default=0,
                        help="also redo each run's later stages this many times from jittered tracks")
    parser.add_argument("--jitter-px", type=float, default=0.1, help="the repeats' noise, pixels per axis")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="refinement-"))
    rows, solvers = [], []
    for name in args.sets:
        rows += run_set(Path(args.data), name, args.weights, workdir, args.repeats, args.jitter_px)
        print(format_rows(rows[-3:]), flush=True)
        solvers += solver_rows(workdir, name)
    print()
    print(format_rows(rows))
    print()
    print(format_rows(solvers))


def format_rows(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])
                                       for c in columns) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
