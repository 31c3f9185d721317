"""Our pipeline and pycolmap's default pipeline on the same photos, side by side, in one run.

    python benchmarks/compare_colmap.py ../shared/data/fountain_p11/images --truth ../shared/data/fountain_p11/gt

Each method runs in its own child process (one after the other, so they never share the
cores), which also gives each its own peak memory. Prints one table.
"""
import argparse
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summary(model, truth: str | None, seconds: dict) -> dict:
    from storage.colmap_model import poses_by_name, read_model
    from sfm_core.evaluation import evaluate_poses

    row = {"seconds": seconds, "total_s": sum(seconds.values()), "peak_mb": _peak_rss_mb()}
    if model is None:
        return {**row, "registered": 0}
    row.update(registered=model.num_reg_images(), points=model.num_points3D(),
               reproj_px=model.compute_mean_reprojection_error(), track_length=model.compute_mean_track_length())
    if truth:
        accuracy = evaluate_poses(poses_by_name(model), poses_by_name(read_model(truth)))
        row.update({k: accuracy[k] for k in ("auc@3", "auc@5", "auc@10")}, reference_images=accuracy["reference_images"])
    return row


def run_ours(images: str, truth: str | None, workdir: str) -> dict:
    import pycolmap
    from flows.reconstruct import reconstruct

    shutil.rmtree(workdir, ignore_errors=True)  # a left-over output would be reused, not timed
    started = time.perf_counter()
    report = reconstruct(images, workdir)
    seconds = {name: stage["seconds"] for name, stage in report["stages"].items()}
    seconds["prefect"] = time.perf_counter() - started - sum(seconds.values())  # flow and server overhead
    model_dir = Path(workdir) / "sparse" / "0"
    return _summary(pycolmap.Reconstruction(str(model_dir)) if model_dir.is_dir() else None, truth, seconds)


def run_colmap_mapper(images: str, truth: str | None, workdir: str, mapper: str) -> dict:
    from benchmarks.colmap_reference import run_colmap

    result = run_colmap(images, (mapper,), workdir)
    return _summary(result["models"][mapper], truth, result["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images")
    parser.add_argument("--truth", help="COLMAP model of the true or reference cameras")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--colmap", nargs="*", default=["incremental", "global"], help="COLMAP mappers to run")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="compare-colmap-"))
    rows = {}
    with ProcessPoolExecutor(max_workers=1) as pool:
        rows["landmark-sfm"] = pool.submit(run_ours, args.images, args.truth, str(workdir / "ours")).result()
    for mapper in args.colmap:
        with ProcessPoolExecutor(max_workers=1) as pool:
            rows[f"colmap {mapper}"] = pool.submit(run_colmap_mapper, args.images, args.truth,
                                                   str(workdir / f"colmap-{mapper}"), mapper).result()
    print(format_table(rows))


def format_table(rows: dict) -> str:
    columns = ["registered", "auc@3", "auc@5", "auc@10", "reproj_px", "points", "track_length", "total_s", "peak_mb"]
    lines = ["| method | " + " | ".join(columns) + " | seconds per stage |", "|" + "---|" * (len(columns) + 2)]
    for name, row in rows.items():
        cells = []
        for column in columns:
            value = row.get(column)
            if column == "registered" and "reference_images" in row:
                value = f"{value}/{row['reference_images']}"
            cells.append("" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
        stages = ", ".join(f"{k} {v:.1f}" for k, v in row["seconds"].items())
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {stages} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
