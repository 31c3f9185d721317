"""The reconstruction flow: a photo folder in, COLMAP models out."""
import json
import time
from pathlib import Path

from prefect import flow

from flows.layout import OutputLayout
from flows.settings import Settings
from flows.tasks import bundle_adjust, export, extract_features, ingest, initialize_cameras, match_and_track, triangulate
from storage.atomic import atomic_path
from storage.sources import listing_fingerprint


@flow(name="reconstruct", log_prints=True)
def reconstruct(source: str, out: str, max_image_size: int = 1024, max_features: int = 4096,
                camera_model: str = "SIMPLE_RADIAL", bundle_adjuster: str = "ceres",
                device: str = "cpu") -> dict:
    """Reconstruct the photos in folder `source` into `out` (see README: what it writes)."""
    started = time.perf_counter()
    settings = Settings(max_image_size=max_image_size, max_features=max_features,
                        camera_model=camera_model, bundle_adjuster=bundle_adjuster, device=device)
    layout = OutputLayout(Path(out))
    source = str(Path(source).resolve())
    # Each stage's checkpoint key chains onto the one before it, starting from the listing.
    stages = {"ingest": ingest(layout, settings, listing_fingerprint(source), source)}
    stages["features"] = extract_features(layout, settings, stages["ingest"]["key"])
    stages["matching-tracks"] = match_and_track(layout, settings, stages["features"]["key"])
    stages["cameras"] = initialize_cameras(layout, settings, stages["matching-tracks"]["key"])
    stages["triangulation"] = triangulate(layout, settings, stages["cameras"]["key"])
    stages["bundle-adjustment"] = bundle_adjust(layout, settings, stages["triangulation"]["key"])
    stages["export"] = export(layout, settings, stages["bundle-adjustment"]["key"], source)
    models = stages["export"]["models"]
    report = {
        "source": source,
        "output": str(layout.root.resolve()),
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
    return report
