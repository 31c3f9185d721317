"""The fold test (sfm_core.superimposition) on finished models: how much of each model's
structure lies twice over the same place, whether that makes it folded, and, for a folded one,
the two sides it would be split into, each scored against the truth over its own photos.

    python benchmarks/folds.py MODEL[:TRUTH] [MODEL[:TRUTH] ...]

MODEL: a COLMAP model folder (a run's sparse/<i>, or a model before the export's split, such
as stages/merged/<i>); TRUTH: a COLMAP model of the true cameras (`landmark-sfm synth`'s gt/).
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)


def main(arguments: list[str]) -> None:
    from sfm_core.evaluation import evaluate_poses
    from sfm_core.superimposition import split_model, superimposition
    from storage.colmap_model import poses_by_name, read_model

    print("| model | photos | share | folded | sides: photos, AUC@5 over their own photos | seconds |\n"
          "|---|---|---|---|---|---|")
    for argument in arguments:
        path, _, truth_path = argument.partition(":")
        rec = read_model(path)
        started = time.perf_counter()
        found = superimposition(rec)
        seconds = time.perf_counter() - started
        sides = ""
        if found.folded:
            truth = poses_by_name(read_model(truth_path)) if truth_path else None
            cells = []
            for side in split_model(rec, found.sides):
                poses = poses_by_name(side)
                auc = (f", {evaluate_poses(poses, {k: v for k, v in truth.items() if k in poses})['auc@5']:.3f}"
                       if truth else "")
                cells.append(f"{side.num_reg_images()}{auc}")
            sides = "; ".join(cells) + f"; {len(found.undecided)} on neither side"
        print(f"| {path} | {rec.num_reg_images()} | {found.share:.3f} | {'yes' if found.folded else 'no'} | {sides} | "
              f"{seconds:.1f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    main(sys.argv[1:])
