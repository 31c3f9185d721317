"""The verdict's rules of this checkout applied to finished runs, beside the verdict each run
wrote and, where a truth is given, its AUC@5: how a change of the rules moves the verdicts of
models already made, without making them again.

    python benchmarks/regrade.py OUT[:TRUTH] [OUT[:TRUTH] ...]

OUT: the output folder of a `landmark-sfm run`; TRUTH: a COLMAP model of the true cameras
(`landmark-sfm synth`'s gt/). A model counts as wrong below AUC@5 0.8 (the issue's line): the
table then says whether the verdict caught it.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)

WRONG_BELOW_AUC5 = 0.8


def regrade(out: Path) -> tuple[dict, dict]:
    """(the verdict of sparse/0 that the run wrote, the one the current rules give)."""
    from flows.layout import OutputLayout
    from flows.stage_io import cameras_stage_findings
    from flows.verdicts import model_grades
    from storage.colmap_model import model_dirs, read_model

    layout = OutputLayout(out)
    report = json.loads(layout.report.read_text())
    models = [read_model(folder) for folder in model_dirs(layout.sparse)]
    grades = model_grades(layout, models, report["settings"]["features"],
                          cameras_stage_findings(report["stages"], "exif_rejected"))
    return report["verdict"], grades[0]["verdict"] if grades else {"status": "suspect", "reasons": ["no model"]}


def main(arguments: list[str]) -> None:
    import logging
    from storage.colmap_model import evaluate_model_dirs

    logging.getLogger("landmark_sfm").setLevel(logging.ERROR)  # the grading's own log lines
    print("| run | AUC@5 | verdict written | verdict now | reasons now |\n|---|---|---|---|---|")
    for argument in arguments:
        out, _, truth = argument.partition(":")
        written, now = regrade(Path(out))
        auc = evaluate_model_dirs(Path(out) / "sparse" / "0", truth)["auc@5"] if truth else None
        caught = "" if auc is None or auc >= WRONG_BELOW_AUC5 else (
            " (wrong: caught)" if now["status"] == "suspect" else " (wrong: MISSED)")
        print(f"| {out} | {'' if auc is None else f'{auc:.3f}'} | {written['status']} | {now['status']}{caught} | "
              f"{'; '.join(reason[:80] for reason in now['reasons'])} |")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    main(sys.argv[1:])
