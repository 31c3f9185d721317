"""The reconstruction flow: a photo folder in, COLMAP models out."""
import json
import tempfile
import time
from pathlib import Path

from prefect import flow

from flows.artifacts import publish_run_artifacts
from flows.layout import OutputLayout
from flows.settings import Settings
from flows.tasks import bundle_adjust, export, extract_features, ingest, initialize_cameras, match_and_track, triangulate
from storage.atomic import atomic_path
from storage.sources import listing_fingerprint
from storage.uris import is_local, local_path, sync_down, sync_up


@flow(name="reconstruct", log_prints=True)
def reconstruct(source: str, out: str, max_image_size: int = 1024, max_features: int = 4096,
                camera_model: str = "SIMPLE_RADIAL", bundle_adjuster: str = "ceres",
                device: str = "cpu", storage_options: dict | None = None) -> dict:
    """Reconstruct the photos of `source` (a folder or list file, local or a URI) into `out`
    (a folder or a URI; see README: what it writes)."""
    settings = Settings(max_image_size=max_image_size, max_features=max_features,
                        camera_model=camera_model, bundle_adjuster=bundle_adjuster, device=device)
    if is_local(source):
        source = str(Path(local_path(source)).resolve())
    if is_local(out):
        return _run(source, Path(local_path(out)), settings, storage_options, publish=lambda: None,
                    output=str(Path(local_path(out)).resolve()))
    # A remote output: the stages work in a local mirror of it, uploaded after every stage.
    with tempfile.TemporaryDirectory(prefix="landmark-sfm-mirror-") as mirror:
        sync_down(out, mirror, storage_options)
        return _run(source, Path(mirror), settings, storage_options,
                    publish=lambda: sync_up(mirror, out, storage_options), output=out)


def _run(source: str, root: Path, settings: Settings, storage_options: dict | None, publish, output: str) -> dict:
    started = time.perf_counter()
    layout = OutputLayout(root)

    def stage(name, task, upstream_key, *args):
        stages[name] = task(layout, settings, upstream_key, *args)
        publish()
        return stages[name]["key"]

    # Each stage's checkpoint key chains onto the one before it, starting from the listing.
    stages = {}
    key = stage("ingest", ingest, listing_fingerprint(source, storage_options), source, storage_options)
    key = stage("features", extract_features, key, storage_options)
    key = stage("matching-tracks", match_and_track, key)
    key = stage("cameras", initialize_cameras, key)
    key = stage("triangulation", triangulate, key)
    key = stage("bundle-adjustment", bundle_adjust, key)
    stage("export", export, key, source, storage_options)
    models = stages["export"]["models"]
    report = {
        "source": source,
        "output": output,
        "settings": settings.as_dict(),
        "stages": stages,
        "totals": {
            "seconds": round(time.perf_counter() - started, 2),
            "images": stages["ingest"]["images"],
            "left_out": stages["ingest"]["left_out"],
            "registered": models[0]["registered"] if models else 0,
            "points": models[0]["points"] if models else 0,
            "mean_reprojection_error_px": models[0]["mean_reprojection_error_px"] if models else None,
            "models": len(models),
        },
    }
    with atomic_path(str(layout.report)) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    publish()
    publish_run_artifacts(report, layout)
    return report
