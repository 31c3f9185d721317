"""What the run made of each photo, written into the manifest when the run ends.

Ingest writes the manifest before any pair is seen. When the models are exported, each
usable photo's `focal_source` is resolved (a camera of --intrinsics is "known", an EXIF
focal length the view graph contradicted is "exif_rejected: contradicted by the view
graph: ...") and its `result` says which model holds it, whether its pose is determined,
or why it was left out.
"""
from dataclasses import replace

from flows.layout import OutputLayout
from flows.stage_io import cameras_stage_findings
from sfm_core.cameras import parse_camera_spec
from storage.colmap_model import model_dirs, read_model
from storage.manifest import read_manifest, write_manifest


def focal_sources(rows, intrinsics, contradicted: dict[str, str] | None = None) -> list[str | None]:
    """Where the focal length of each row comes from: "known" where the photo's size is that of
    a camera of `intrinsics` (settings.intrinsics: with_known_intrinsics gives it that camera),
    "exif_rejected: <why>" where the cameras stage found its EXIF contradicted (`contradicted`,
    {name: why}: cameras_stage_findings), else ingest's (the manifest's ingest_focal_source).
    Resolved here rather than at ingest because ingest's checkpoint key leaves out the
    intrinsics (changing them must not re-read every photo) and ingest sees no pair."""
    known = {(camera.width, camera.height) for camera in map(parse_camera_spec, intrinsics)}
    contradicted = contradicted or {}
    return ["known" if r.status == "ok" and (r.width, r.height) in known else
            f"exif_rejected: {contradicted[r.name]}" if r.status == "ok" and r.name in contradicted else
            r.ingest_focal_source for r in rows]


UNDECIDED_SIDE = ("in a chunk model that laid two sides over each other (joined or split before the merge); "
                  "what it sees does not tell its side")


def photo_results(rows, registered_in: dict[str, str], undetermined: dict[str, str],
                  left_out: dict[str, str]) -> list[str | None]:
    """The `result` of each manifest row: None for an unusable file, else "sparse/<m>" (its
    model, from `registered_in` {name: "sparse/<m>"}), with ", pose undetermined: <why>"
    where `undetermined` {name: why} says so, "left out: <why>" for the cameras stage's
    `left_out` {name: why} (the cameras stage's, or a fold's undecided photos), or "not registered"."""
    results = []
    for row in rows:
        if row.status != "ok":
            results.append(None)
        elif row.name in registered_in:
            model = registered_in[row.name]
            why = undetermined.get(row.name)
            results.append(model if why is None else f"{model}, pose undetermined: {why}")
        elif row.name in left_out:
            results.append(f"left out: {left_out[row.name]}")
        else:
            results.append("not registered")
    return results


def record_outcomes(layout: OutputLayout, intrinsics, stages: dict) -> list:
    """Rewrite the manifest with each photo's resolved focal_source and its result; returns
    the rows written (storage.manifest.ManifestRow).

    intrinsics: settings.intrinsics; stages: the run's stage reports (report.json's "stages").
    Only these two columns change: the stages read ingest's own columns, so a re-run with
    other settings is not steered by this run's outcome."""
    rows = read_manifest(str(layout.manifest))
    registered_in = {}
    for index, folder in enumerate(model_dirs(layout.sparse)):
        for image in read_model(folder).images.values():
            if image.has_pose:
                registered_in.setdefault(image.name, f"sparse/{index}")
    undetermined = {}
    for entry in stages.get("export", {}).get("models", []):
        undetermined.update({name: why for name, why in entry.get("undetermined", {}).items()
                             if registered_in.get(name) == entry["model"]})
    sources = focal_sources(rows, intrinsics, cameras_stage_findings(stages, "exif_rejected"))
    left_out = cameras_stage_findings(stages, "left_out_for_contradictions")
    for fold in stages.get("merge", {}).get("folds", []):
        left_out.update({name: UNDECIDED_SIDE for name in fold["undecided"]})
    results = photo_results(rows, registered_in, undetermined, left_out)
    rows = [replace(row, focal_source=source, result=result) for row, source, result in zip(rows, sources, results)]
    write_manifest(rows, str(layout.manifest))
    return rows
