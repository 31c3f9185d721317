"""Ceres and Theseus bundle adjustment on the same problems, side by side, in one run.

    python benchmarks/bundle_adjusters.py                       # 30 cameras, 10,000 points
    python benchmarks/bundle_adjusters.py --model out/stages/triangulation/chunk-0/0 ...

A synthetic problem (cameras on a ring, 0.5 px noise, 1 % outliers, poses and points moved
by ~2 cm, focal lengths 2 % off) or the triangulated models of real runs. Each solver starts
from the same copy; prints seconds, the final mean reprojection error and the robust cost.
"""
import argparse
import sys
import time
from pathlib import Path

import pycolmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before pycolmap loads)
from sfm_core.ba_problems import perturbed_reconstruction  # noqa: E402
from sfm_core.bundle_adjustment import BundleAdjustmentSettings, CeresBundleAdjuster  # noqa: E402
from sfm_core.theseus_ba import (TheseusBundleAdjuster, free_params, problem_from_reconstruction,  # noqa: E402
                                 residuals, robust_cost)


def final_cost(rec: pycolmap.Reconstruction, settings: BundleAdjustmentSettings) -> tuple[float, float]:
    """0.5 * sum of Cauchy(|r|^2) over all observations, in pixels (the objective both minimise),
    and the median reprojection error (a raw triangulation's few points that end behind a
    camera make the mean meaningless)."""
    problem, state, *_ = problem_from_reconstruction(rec)
    r, _ = residuals(problem, state, free_params(problem.model, settings))
    return float(robust_cost(problem, r, settings.robust_loss_scale_px)), float(r.norm(dim=1).median())


def compare(name: str, make) -> list[dict]:
    settings = BundleAdjustmentSettings()
    rows = []
    for adjuster in (CeresBundleAdjuster(), TheseusBundleAdjuster()):
        rec = make()
        started = time.perf_counter()
        error = adjuster.adjust(rec, settings)
        seconds = time.perf_counter() - started
        cost, median_error = final_cost(rec, settings)
        rows.append({"problem": name, "solver": adjuster.name, "images": rec.num_reg_images(),
                     "points": rec.num_points3D(), "observations": rec.compute_num_observations(),
                     "seconds": seconds, "mean_error_px": error, "median_error_px": median_error, "cost": cost})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=30)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--model", nargs="*", default=[], help="COLMAP models to adjust (e.g. a triangulation stage's)")
    args = parser.parse_args()
    rows = compare(f"synthetic {args.cameras} x {args.points}", lambda: perturbed_reconstruction(args.cameras, args.points))
    for folder in args.model:
        rows += compare(folder, lambda: pycolmap.Reconstruction(folder))
    print("| problem | solver | images | points | observations | seconds | mean error px | median error px | cost | "
          "time / ceres |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        ceres = next(r for r in rows if r["problem"] == row["problem"] and r["solver"] == "ceres")
        print(f"| {row['problem']} | {row['solver']} | {row['images']} | {row['points']} | {row['observations']} | "
              f"{row['seconds']:.2f} | {row['mean_error_px']:.4f} | {row['median_error_px']:.4f} | {row['cost']:.2f} | "
              f"{row['seconds'] / ceres['seconds']:.2f} |")


if __name__ == "__main__":
    main()
