"""What the stages share: the run's logger, the usable photos, their cameras, fresh folders,
and what track refinement needs from them."""
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from flows.checkpointing import stage_seconds
from flows.layout import OutputLayout
from flows.settings import Settings
from sfm_core.bundle_adjustment import BundleAdjustmentSettings, RefinementSettings
from sfm_core.cameras import InitialCameras, cameras_for_images, parse_camera_spec, with_known_intrinsics
from sfm_core.features import Features
from sfm_core.track_refinement import CorrelationRefiner, KeypointShape, PatchRefiner
from sfm_core.tracks import Tracks
from storage.manifest import read_manifest
from storage.refiner_weights import load_weights


class StageLogger(logging.LoggerAdapter):
    """The run's logger, with `done`: the stage's one line as it ends, its seconds last."""

    def done(self, message: str, *args) -> None:
        """Log `message % args` at INFO, then " (4.1 s)": the seconds since the stage began."""
        seconds = stage_seconds()
        self.info(message if seconds is None else f"{message} ({seconds:.1f} s)", *args)


def stage_logger() -> StageLogger:
    """The run's logger inside Prefect (shown in the UI); a plain one when called as task.fn()."""
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger("landmark_sfm")
    return StageLogger(logger)


def usable_rows(layout: OutputLayout):
    """Manifest rows of the photos to reconstruct; frame f of every stage is usable_rows[f]."""
    return [r for r in read_manifest(str(layout.manifest)) if r.status == "ok"]


def initial_cameras(rows, settings: Settings) -> InitialCameras:
    """The distinct initial cameras of `rows` (ids 1..K), the camera index of each row, and
    the ids of those whose intrinsics are known (settings.intrinsics), held fixed."""
    sizes = [(r.width, r.height) for r in rows]
    cameras, camera_of_frame = cameras_for_images(
        sizes, [(r.camera_make, r.camera_model) for r in rows], [r.focal_length_px for r in rows],
        settings.camera_model, settings.shared_cameras)
    return with_known_intrinsics(cameras, camera_of_frame, sizes,
                                 [parse_camera_spec(spec) for spec in settings.intrinsics])


FOCAL_SOURCE_KINDS = ("exif", "exif_rejected", "calibrated", "known")


def cameras_stage_findings(stages: dict, key: str) -> dict[str, str]:
    """{photo name: why} that the chunks' cameras stage reported under `key` ("exif_rejected":
    EXIF focal lengths the view graph contradicts; "left_out_for_contradictions"), from the
    run's stage reports (report.json's "stages")."""
    found = {}
    for chunk in stages.get("cameras", {}).get("chunks", []):
        found.update(chunk.get(key, {}))
    return found


def loop_breaking_pairs(stages: dict) -> list[list[str]]:
    """The pairs ([name1, name2]) that the chunks' cameras stage dropped for breaking the
    rotation loops of the view graph, from the run's stage reports (report.json's "stages")."""
    return [pair for chunk in stages.get("cameras", {}).get("chunks", []) for pair in chunk.get("loop_breaking_pairs", [])]


def count_focal_sources(sources) -> dict[str, int]:
    """{"exif": n, "exif_rejected": n, "calibrated": n, "known": n} over `sources` (the
    rejected ones counted whatever their reason)."""
    kinds = [source.split(":")[0] for source in sources if source]
    return {kind: kinds.count(kind) for kind in FOCAL_SOURCE_KINDS}


def fresh(folder: Path) -> Path:
    """Empty a stage's model folder: a re-run with fewer groups must not leave old ones behind."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def gray_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (H, W) float32 in [0, 1], as the track refiners read images."""
    return torch.from_numpy(rgb.astype(np.float32).mean(axis=2) / 255.0)


def keypoint_shape(tracks: Tracks, features: list[Features]) -> KeypointShape:
    """Keypoint scale and orientation of every track observation (NaN where not visible):
    SIFT's own, or the learned extractors' fixed scale and orientation 0 (patches then compare
    at the photos' relative resolution)."""
    scale = np.full(tracks.visibility.shape, np.nan, np.float32)
    orientation = np.full(tracks.visibility.shape, np.nan, np.float32)
    for frame, frame_features in enumerate(features):
        # Points followed by correlation (sfm_core.query_tracks) have no detection: NaN (the
        # refiner leaves them where the correlation found them).
        detected = tracks.visibility[frame] & (tracks.keypoint_index[frame] < len(frame_features.keypoints))
        index = tracks.keypoint_index[frame, detected]
        scale[frame, detected] = frame_features.scales[index]
        orientation[frame, detected] = frame_features.orientations[index]
    return KeypointShape(scale, orientation)


def make_refiner(settings: Settings) -> PatchRefiner:
    if settings.track_refinement == "correlation":
        return CorrelationRefiner()
    if settings.track_refinement == "learned":
        return load_weights(settings.refiner_weights)
    raise ValueError(f"unknown track refinement {settings.track_refinement!r}")


def refinement_settings(layout: OutputLayout, settings: Settings) -> RefinementSettings:
    """The refinement's settings: cameras of known intrinsics stay fixed in every adjustment."""
    constant = initial_cameras(usable_rows(layout), settings).constant_ids
    return RefinementSettings(bundle_adjustment=BundleAdjustmentSettings(constant_cameras=constant))
