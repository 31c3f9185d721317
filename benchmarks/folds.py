"""The fold test (sfm_core.superimposition) on finished models: how much of each model's
structure lies twice over the same place, whether that makes it folded, and, for a folded one,
the two sides it would be split into and, for a model of a run, the model the merge stage joins
them into (sfm_core.fold_join, from the run's verified pairs), each scored against the truth over its
own photos, and how many of the joined model's photos the verdict finds determined (sfm_core.verdict).

    python benchmarks/folds.py MODEL[:TRUTH] [MODEL[:TRUTH] ...]

MODEL: a COLMAP model folder: a run's chunk model, RUN/models/chunk-<k>/<m> (what the merge stage
unfolds), or a merged one of a run before 0.3.5, RUN/stages/merged/<i>; the join reads the
run's pairs.parquet. TRUTH: a COLMAP model of the true cameras (`landmark-sfm synth`'s gt/).
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)


def main(arguments: list[str]) -> None:
    from flows.layout import OutputLayout
    from flows.tasks import named_pairs
    from sfm_core.evaluation import evaluate_poses
    from sfm_core.fold_join import join_sides
    from sfm_core.superimposition import split_model, superimposition
    from sfm_core.verdict import grade_model
    from storage.colmap_model import poses_by_name, read_model

    print("| model | photos | share | folded | sides: photos, AUC@5 over their own photos | joined: photos, AUC@5; "
          "seam pairs; photos the verdict finds determined | seconds |\n|---|---|---|---|---|---|---|")
    for argument in arguments:
        path, _, truth_path = argument.partition(":")
        rec = read_model(path)
        started = time.perf_counter()
        found = superimposition(rec)
        seconds = time.perf_counter() - started
        sides = joined_cell = ""
        if found.folded:
            truth = poses_by_name(read_model(truth_path)) if truth_path else None

            def scored(model) -> str:
                poses = poses_by_name(model)
                auc = (f", {evaluate_poses(poses, {k: v for k, v in truth.items() if k in poses})['auc@5']:.3f}"
                       if truth else "")
                return f"{model.num_reg_images()}{auc}"

            sides = "; ".join(map(scored, split_model(rec, found.sides))) + f"; {len(found.undecided)} on neither side"
            run = Path(path).resolve().parents[2]
            if (run / "pairs.parquet").exists():
                started = time.perf_counter()
                joined = join_sides(rec, found.sides, named_pairs(OutputLayout(run)))
                seconds += time.perf_counter() - started
                joined_cell = ("not joined" if joined is None else
                               f"{scored(joined.model)}; {joined.seam_pairs}; {grade_model(joined.model).registered}")
        print(f"| {path} | {rec.num_reg_images()} | {found.share:.3f} | {'yes' if found.folded else 'no'} | {sides} | "
              f"{joined_cell} | {seconds:.1f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    main(sys.argv[1:])
