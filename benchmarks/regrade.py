"""The verdict's rules of this checkout applied to finished runs, beside the verdict each run
wrote and, where a truth is given, its AUC@5: how a change of the rules moves the verdicts of
models already made, without making them again.

    python benchmarks/regrade.py OUT[:TRUTH] [OUT[:TRUTH] ...]

OUT: the output folder of a `landmark-sfm run`; TRUTH: a COLMAP model of the true cameras
(`landmark-sfm synth`'s gt/). A model counts as wrong below AUC@5 0.8 (the issue's line): the
table then says whether the verdict caught it. For a run made before its report named the
pairs that the cameras stage dropped for breaking rotation loops (0.3.6 and earlier), the
check is made again from the run's pairs, as the cameras stage makes it.
"""
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)

WRONG_BELOW_AUC5 = 0.8


def loop_breaking_pairs_again(layout, settings) -> list[list[str]]:
    """The pairs ([name1, name2]) the cameras stage drops for breaking rotation loops, checked
    again from the run's outputs."""
    from flows.chunk_tasks import calibrate_and_check_loops, load_chunk
    from flows.tasks import chunk_plan
    from sfm_core.initialization import pose_graph_components

    dropped = []
    for chunk in chunk_plan(layout):
        inputs = load_chunk(layout, settings, chunk)
        for frames in pose_graph_components(len(inputs.rows), inputs.pairs):
            loops = calibrate_and_check_loops(inputs, settings, chunk, frames)[2]
            dropped += [[inputs.rows[d.index1].name, inputs.rows[d.index2].name] for d in loops.dropped]
    return dropped


def regrade(out: Path) -> tuple[dict, dict]:
    """(the verdict of sparse/0 that the run wrote, the one the current rules give)."""
    from flows.layout import OutputLayout
    from flows.settings import Settings
    from flows.stage_io import cameras_stage_findings, loop_breaking_pairs
    from flows.tasks import pairs_set_aside, read_folds
    from flows.verdicts import model_grades
    from storage.colmap_model import model_dirs, read_model

    layout = OutputLayout(out)
    report = json.loads(layout.report.read_text())
    settings = Settings(**{name: value for name, value in report["settings"].items()
                           if name in {f.name for f in dataclasses.fields(Settings)}})
    cameras = report["stages"].get("cameras", {}).get("chunks", [])
    named = all("loop_breaking_pairs" in chunk for chunk in cameras)
    loop_breaking = loop_breaking_pairs(report["stages"]) if named else loop_breaking_pairs_again(layout, settings)
    models = [read_model(folder) for folder in model_dirs(layout.sparse)]
    grades = model_grades(layout, models, settings.features,
                          cameras_stage_findings(report["stages"], "exif_rejected"),
                          pairs_set_aside(read_folds(layout), loop_breaking))
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
