"""The reconstruction flow: a photo collection in, COLMAP models out.

The collection-wide stages run in the flow; the chunks go through the subflow
`reconstruct-chunks`, whose task runner is a Dask cluster when there is more than one chunk
(flows/dispatch.py).
"""
import json
import tempfile
import time
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.artifacts import StageProgress, publish_run_artifacts
from flows.checkpointing import report_of, results_storage, run_stage
from flows.chunk_tasks import CHUNK_STAGES, make_tracks
from flows.dispatch import chunk_task_runner, gpu_annotation
from flows.layout import OutputLayout, chunk_name
from flows.outcomes import record_outcomes
from flows.settings import Settings, chunk_overlap_for
from flows.stage_io import cameras_stage_findings, count_focal_sources, loop_breaking_pairs, stage_logger
from flows.tasks import chunk_plan, export, extract_features, ingest, match_pairs, merge_chunks, plan_chunk_groups
from sfm_core.cameras import parse_camera_spec
from sfm_core.chunking import Chunk
from storage.atomic import atomic_path
from storage.refiner_weights import file_sha256, load_weights
from storage.checkpoints import make_key
from storage.sources import listing_fingerprint
from storage.stage_table import write_stage_table
from storage.uris import is_local, local_path, sync_down, sync_up
# The stages in the order they run, as report.json lists them; the per-chunk ones
# (tracks to bundle-adjustment) report each chunk under their "chunks".
STAGES = ("ingest", "features", "matching", "chunking", "tracks", "cameras", "triangulation",
          "bundle-adjustment", "merge", "export")


@flow(name="reconstruct", log_prints=True)
def reconstruct(source: str, out: str, max_image_size: int = 1024, max_features: int = 4096, features: str = "sift",
                camera_model: str = "SIMPLE_RADIAL", shared_cameras: str = "auto", bundle_adjuster: str = "ceres",
                device: str = "cpu", chunk_size: int = 100, dask_address: str | None = None,
                tracks: str = "query", track_refinement: str = "correlation", refiner_weights: str | None = None,
                intrinsics: list[str] | None = None, transitive_rounds: int = 2,
                storage_options: dict | None = None) -> dict:
    """Reconstruct the photos of `source` (a folder or list file, local or a URI) into `out`
    (a folder or a URI; see README: what it writes). Chunks of at most `chunk_size` images run
    on the Dask scheduler at `dask_address`, or on a local cluster. `refiner_weights` (a file
    of `landmark-sfm train`) refines the tracks with the learned refiner instead of
    `track_refinement`. `intrinsics`: known cameras ("MODEL WIDTH HEIGHT PARAMS...", as a line
    of COLMAP's cameras.txt without its id): photos of their size use them, held fixed.
    `transitive_rounds`: rounds of candidate pairs from the verified view graph after
    retrieval's (Settings.transitive_rounds). `tracks`: "query" or "pairs" (Settings.tracks)."""
    if refiner_weights:
        load_weights(refiner_weights)  # a bad file fails here, in one line, not in every chunk
    for spec in intrinsics or ():
        parse_camera_spec(spec)  # likewise a malformed camera
    settings = Settings(max_image_size=max_image_size, max_features=max_features, features=features,
                        camera_model=camera_model, shared_cameras=shared_cameras, bundle_adjuster=bundle_adjuster,
                        device=device, chunk_size=chunk_size, chunk_overlap=chunk_overlap_for(chunk_size),
                        intrinsics=tuple(intrinsics or ()), transitive_rounds=transitive_rounds,
                        tracks=tracks, track_refinement="learned" if refiner_weights else track_refinement,
                        refiner_weights=refiner_weights and str(Path(refiner_weights).resolve()),
                        refiner_sha256=refiner_weights and file_sha256(refiner_weights))
    if is_local(source):
        source = str(Path(local_path(source)).resolve())
    if is_local(out):
        return _run(source, Path(local_path(out)), settings, dask_address, storage_options,
                    publish=lambda: None, output=str(Path(local_path(out)).resolve()))
    # A remote output: the stages work in a local mirror of it, uploaded after every stage.
    with tempfile.TemporaryDirectory(prefix="landmark-sfm-mirror-") as mirror:
        sync_down(out, mirror, storage_options)
        return _run(source, Path(mirror), settings, dask_address, storage_options,
                    publish=lambda: sync_up(mirror, out, storage_options), output=out)


@flow(name="reconstruct-chunks")
def reconstruct_chunks(layout: OutputLayout, settings: Settings, upstream: dict, chunks: list[Chunk],
                       storage_options: dict | None = None) -> dict:
    """Each chunk's stages chained as tasks; the chunks run side by side on the task runner.
    Returns {stage: [report of each chunk]}; a chunk that fails is logged and left out."""
    from prefect.context import FlowRunContext
    runner = FlowRunContext.get().task_runner
    with gpu_annotation(settings.device, runner):
        futures = {}
        for chunk in chunks:
            # Each stage takes the checkpoint key of the stage before it (known before that one
            # runs: it is its cache key) and waits for it. Passing the upstream *future* as an
            # argument instead makes Prefect 3.8 record the stage as a child of its upstream
            # whenever the API still shows that one running (its Completed event not yet
            # processed), and the graph draws cameras inside tracks. wait_for keeps the edge.
            previous_key, previous = upstream, None
            for stage in CHUNK_STAGES:
                extra = {"storage_options": storage_options} if stage is make_tracks else {}
                previous = futures[chunk.index, stage.name] = stage.with_options(
                    result_storage=results_storage(layout)).submit(
                        layout, settings, previous_key, chunk, wait_for=[previous] if previous else None, **extra)
                previous_key = stage.cache_key_fn(None, {"settings": settings, "upstream": previous_key, "chunk": chunk})
    reports = {stage.name: [] for stage in CHUNK_STAGES}
    progress = StageProgress("chunks", len(chunks), unit="chunks")
    for chunk in progress.track(chunks):
        for stage in CHUNK_STAGES:
            future = futures[chunk.index, stage.name]
            future.wait()
            if not future.state.is_completed():
                stage_logger().error("%s left out: its %s stage ended %s: %s", chunk_name(chunk), stage.name,
                                     future.state.name, future.state.message)
                break
            reports[stage.name].append({"chunk": chunk.index, **report_of(future.state)})
    return reports


def _run(source: str, root: Path, settings: Settings, dask_address: str | None, storage_options: dict | None,
         publish, output: str) -> dict:
    started = time.perf_counter()
    layout = OutputLayout(root)
    stages = {}

    def stage(name, task, upstream, *args):
        stages[name] = run_stage(task, layout, settings, upstream, *args)
        publish()
        return stages[name]

    # Each stage's checkpoint key chains onto the one before it, starting from the listing.
    upstream = stage("ingest", ingest, listing_fingerprint(source, storage_options), source, storage_options)
    upstream = stage("features", extract_features, upstream, storage_options)
    upstream = stage("matching", match_pairs, upstream)
    upstream = stage("chunking", plan_chunk_groups, upstream)
    chunks = chunk_plan(layout)
    runner = chunk_task_runner(dask_address, len(chunks))
    per_chunk = reconstruct_chunks.with_options(task_runner=runner)(layout, settings, upstream, chunks, storage_options)
    for name, reports in per_chunk.items():
        stages[name] = _combined(reports)
    publish()
    # The merge depends on the last stage of every chunk that came through.
    done = stages["bundle-adjustment"]["chunks"]
    upstream = stage("merge", merge_chunks, make_key("chunks", [r["key"] for r in done]), [r["chunk"] for r in done])
    stage("export", export, upstream, storage_options, cameras_stage_findings(stages, "exif_rejected"),
          loop_breaking_pairs(stages))
    rows = record_outcomes(layout, settings.intrinsics, stages)
    report = _run_report(source, output, settings, stages, time.perf_counter() - started,
                         count_focal_sources(r.focal_source for r in rows if r.status == "ok"))
    with atomic_path(str(layout.report)) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    write_stage_table(str(layout.stage_table), stages)
    publish()
    publish_run_artifacts(report, layout)
    return report


def _combined(reports: list[dict]) -> dict:
    """One report of a per-chunk stage: its counts summed over the chunks, and each chunk's."""
    combined = {"status": "ran" if any(r["status"] == "ran" for r in reports) else "reused" if reports else "failed",
                "seconds": round(sum(r["seconds"] for r in reports), 3)}
    for name in sorted({k for r in reports for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}):
        if name not in ("seconds", "chunk", "mean_track_length", "registered"):
            combined[name] = sum(r.get(name, 0) for r in reports)
    combined["chunks"] = reports
    return combined


def _run_report(source: str, output: str, settings: Settings, stages: dict, seconds: float,
                focal_source_counts: dict[str, int]) -> dict:
    models = stages["export"]["models"]
    return {
        "source": source,
        "output": output,
        "flow_run_id": str(flow_run.id),  # the run in the Prefect UI: /runs/flow-run/<id>
        # sparse/0's self-grading (flows/verdicts.py); each model's is in stages.export.models.
        "verdict": models[0]["verdict"] if models else {"status": "suspect", "reasons": ["no model"]},
        "settings": settings.as_dict(),
        "stages": stages,
        "totals": {
            "seconds": round(seconds, 2),
            "images": stages["ingest"]["images"],
            "left_out": stages["ingest"]["left_out"],
            "unconnected": stages["chunking"]["unconnected"],
            "chunks": stages["chunking"]["chunks"],
            "registered": models[0]["registered"] if models else 0,  # poses determined only
            "undetermined": len(models[0]["undetermined"]) if models else 0,
            "points": models[0]["points"] if models else 0,
            "mean_reprojection_error_px": models[0]["mean_reprojection_error_px"] if models else None,
            "models": len(models),
            "focal_sources": focal_source_counts,
        },
    }
