"""The reconstruction's stages as Prefect tasks: each reads its inputs from the output
folder, calls sfm_core, writes its outputs, and returns a small report for report.json."""
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError

from flows.artifacts import StageProgress
from flows.checkpointing import checkpointed
from flows.layout import OutputLayout
from flows.retries import RETRY_DELAYS_S, retry_transient
from flows.settings import Settings
from sfm_core.bundle_adjustment import BUNDLE_ADJUSTERS, RefinementSettings, refine
from sfm_core.calibration import calibrate_focal_lengths, relative_poses
from sfm_core.cameras import cameras_for_images
from sfm_core.features import Features, SiftExtractor
from sfm_core.initialization import initialize_poses, pose_graph_components
from sfm_core.matching import match_mutual_nearest, normalise_descriptors
from sfm_core.model import clear_points, new_reconstruction, point_of_track_map
from sfm_core.pairs import exhaustive_pairs
from sfm_core.tracks import build_tracks, track_xy
from sfm_core.triangulation import TriangulationSettings, triangulate_tracks
from sfm_core.verification import verification_options, verify_pair
from storage.colmap_model import model_dirs, read_model, write_model
from storage.feature_store import FeatureStore
from storage.images import ImageReadError, load_image
from storage.manifest import build_manifest, read_manifest, write_manifest
from storage.pair_table import read_pairs, write_pairs
from storage.sources import list_image_files
from storage.track_store import read_tracks, write_tracks
from storage.uris import is_local, local_path, materialize

TRACK_GROUP = "all"
RETRY = {"retries": len(RETRY_DELAYS_S), "retry_delay_seconds": RETRY_DELAYS_S, "retry_condition_fn": retry_transient}


def _image_folder(layout: OutputLayout, source: str, storage_options: dict | None, scratch: str) -> str:
    """A local folder holding the usable photos under their manifest names: the source
    folder itself when it is one, else `scratch` with them linked or downloaded."""
    if is_local(source) and os.path.isdir(local_path(source)):
        return local_path(source)
    rows = _usable(read_manifest(str(layout.manifest)))
    return str(materialize({r.name: r.uri for r in rows}, scratch, storage_options))


def _fresh(folder: Path) -> Path:
    """Empty a stage's model folder: a re-run with fewer groups must not leave old ones behind."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _logger():
    """The run's logger inside Prefect (shown in the UI); a plain one when called as task.fn()."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("landmark_sfm")


class NoUsableImages(Exception):
    """Nothing in the source can be reconstructed."""


def _usable(rows):
    """Manifest rows of the photos to reconstruct; frame f of every stage is usable[f]."""
    return [r for r in rows if r.status == "ok"]


def _cameras(rows, settings: Settings):
    return cameras_for_images(
        [(r.width, r.height) for r in rows], [(r.camera_make, r.camera_model) for r in rows],
        [r.focal_length_px for r in rows], settings.camera_model)


@task(name="ingest", task_run_name="ingest", **RETRY)
@checkpointed("ingest")
def ingest(layout: OutputLayout, settings: Settings, source: str, storage_options: dict | None = None) -> dict:
    """upstream key: the fingerprint of the source listing (names, sizes, times)."""
    logger = _logger()
    files = list_image_files(source, storage_options)
    rows = build_manifest(source, files, storage_options)
    layout.root.mkdir(parents=True, exist_ok=True)
    write_manifest(rows, str(layout.manifest))
    left_out = [r for r in rows if r.status != "ok"]
    for row in left_out:
        logger.warning("left out %s: %s", row.name, row.status)
    usable = len(rows) - len(left_out)
    logger.info("ingest: %d files, %d usable, %d left out", len(rows), usable, len(left_out))
    if usable < 2:
        raise NoUsableImages(f"{usable} usable image(s) in {source}: at least 2 are needed")
    return {"files": len(rows),
            "images": usable, "left_out": len(left_out)}


@task(name="features", task_run_name="features", **RETRY)
@checkpointed("features", ("max_image_size", "max_features"))
def extract_features(layout: OutputLayout, settings: Settings, storage_options: dict | None = None) -> dict:
    logger = _logger()
    rows = _usable(read_manifest(str(layout.manifest)))
    store = FeatureStore(str(layout.features))
    extractor = SiftExtractor(settings.max_features)
    stored = settings.feature_settings()
    computed = reused = failed = 0
    for row in StageProgress("features", len(rows), unit="images").track(rows):
        if store.has(row.sha256, stored):
            reused += 1
            continue
        try:
            image = load_image(row.uri, settings.max_image_size, storage_options)
        except ImageReadError as error:
            # The probe passed but the full decode did not: go on without this photo.
            logger.warning("no features for %s: %s", row.name, error.reason)
            features, failed = Features(np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                                        np.zeros((0, 128), np.uint8)), failed + 1
        else:
            features = extractor(image.pixels, image.scale_xy)
        store.write(row.sha256, features, stored)
        computed += 1
    logger.info("features: %d images computed, %d reused, %d unreadable", computed, reused, failed)
    return {"computed": computed,
            "reused": reused, "unreadable": failed}


@task(name="matching-tracks", task_run_name="matching-tracks", **RETRY)
@checkpointed("matching-tracks", ("match_ratio", "min_inliers", "camera_model"))
def match_and_track(layout: OutputLayout, settings: Settings) -> dict:
    logger = _logger()
    rows = _usable(read_manifest(str(layout.manifest)))
    store = FeatureStore(str(layout.features))
    features = [store.read(r.sha256) for r in rows]
    cameras, camera_of_frame = _cameras(rows, settings)
    descriptors = [normalise_descriptors(f.descriptors, settings.device) for f in features]
    options = verification_options(settings.min_inliers)
    candidates = exhaustive_pairs(len(rows))
    verified = []
    for i, j in StageProgress("matching", len(candidates), unit="pairs").track(candidates):
        matches = match_mutual_nearest(descriptors[i], descriptors[j], settings.match_ratio)
        pair = verify_pair(i, j, features[i].keypoints, features[j].keypoints, matches,
                           cameras[camera_of_frame[i]], cameras[camera_of_frame[j]], options)
        if pair is not None:
            verified.append(pair)
    image_ids = [r.image_id for r in rows]
    write_pairs(str(layout.pairs), verified, image_ids)
    keypoint_index = build_tracks([len(f.keypoints) for f in features], verified)
    xy, visibility = track_xy(keypoint_index, [f.keypoints for f in features])
    write_tracks(str(layout.tracks), TRACK_GROUP, np.array(image_ids), keypoint_index, xy, visibility)
    lengths = visibility.sum(axis=0)
    mean_length = float(lengths.mean()) if lengths.size else 0.0
    logger.info("matching-tracks: %d of %d pairs verified, %d tracks (mean length %.2f)",
                len(verified), len(candidates), keypoint_index.shape[1], mean_length)
    return {"pairs_matched": len(candidates),
            "pairs_verified": len(verified), "tracks": int(keypoint_index.shape[1]),
            "mean_track_length": round(mean_length, 3)}


def _load_group(layout: OutputLayout):
    rows = _usable(read_manifest(str(layout.manifest)))
    image_ids, keypoint_index = read_tracks(str(layout.tracks), TRACK_GROUP)
    return rows, list(image_ids), keypoint_index


@task(name="cameras", task_run_name="camera-initialisation", **RETRY)
@checkpointed("cameras", ("camera_model",))
def initialize_cameras(layout: OutputLayout, settings: Settings) -> dict:
    logger = _logger()
    rows, image_ids, keypoint_index = _load_group(layout)
    pairs = read_pairs(str(layout.pairs), image_ids)
    store = FeatureStore(str(layout.features))
    keypoints = [store.read_keypoints(r.sha256) for r in rows]
    cameras, camera_of_frame = _cameras(rows, settings)
    names = [r.name for r in rows]
    out = _fresh(layout.stage_models("cameras"))
    components = pose_graph_components(len(rows), pairs)
    posed = []
    for frames in components:
        group_cameras = calibrate_focal_lengths(cameras, camera_of_frame, pairs, frames)
        in_group = set(frames)
        group_pairs = relative_poses(group_cameras, camera_of_frame, keypoints, [p for p in pairs if p.index1 in in_group])
        rec = new_reconstruction(names, group_cameras, camera_of_frame, keypoints, frames)
        if not initialize_poses(rec, group_pairs, keypoint_index):
            logger.warning("camera initialisation failed for a group of %d images", len(frames))
            continue
        clear_points(rec)
        write_model(rec, out / str(len(posed)))
        posed.append(rec.num_reg_images())
    logger.info("cameras: %d images posed jointly in %d group(s) %s; %d with no verified pair",
                sum(posed), len(posed), posed, len(rows) - sum(len(c) for c in components))
    return {"groups": len(posed),
            "posed": sum(posed), "unconnected": len(rows) - sum(len(c) for c in components)}


@task(name="triangulation", task_run_name="triangulation", **RETRY)
@checkpointed("triangulation")
def triangulate(layout: OutputLayout, settings: Settings) -> dict:
    logger = _logger()
    _, _, keypoint_index = _load_group(layout)
    counts = []
    _fresh(layout.stage_models("triangulation"))
    for folder in model_dirs(layout.stage_models("cameras")):
        rec = read_model(folder)
        created = triangulate_tracks(rec, keypoint_index, np.arange(keypoint_index.shape[1]),
                                     TriangulationSettings())
        write_model(rec, layout.stage_models("triangulation") / folder.name)
        counts.append(len(created))
    logger.info("triangulation: %d of %d tracks triangulated", sum(counts), keypoint_index.shape[1])
    return {"points": sum(counts)}


@task(name="bundle-adjustment", task_run_name="bundle-adjustment", **RETRY)
@checkpointed("bundle-adjustment", ("bundle_adjuster",))
def bundle_adjust(layout: OutputLayout, settings: Settings) -> dict:
    logger = _logger()
    _, _, keypoint_index = _load_group(layout)
    adjuster = BUNDLE_ADJUSTERS[settings.bundle_adjuster]()
    filtered = retriangulated = dropped = reposed = 0
    _fresh(layout.stage_models("refined"))
    for folder in model_dirs(layout.stage_models("triangulation")):
        rec = read_model(folder)
        report = refine(rec, keypoint_index, point_of_track_map(rec, keypoint_index), adjuster,
                        RefinementSettings())
        write_model(rec, layout.stage_models("refined") / folder.name)
        filtered += report.observations_filtered
        retriangulated += report.points_retriangulated
        dropped += len(report.frames_dropped)
        reposed += len(report.frames_reposed)
    logger.info("bundle-adjustment (%s): %d observations filtered, %d points re-triangulated, "
                "%d images re-posed by PnP, %d dropped", adjuster.name, filtered, retriangulated, reposed, dropped)
    return {"solver": adjuster.name,
            "observations_filtered": filtered, "points_retriangulated": retriangulated,
            "images_reposed": reposed, "images_dropped": dropped}


@task(name="export", task_run_name="export", **RETRY)
@checkpointed("export")
def export(layout: OutputLayout, settings: Settings, source: str, storage_options: dict | None = None) -> dict:
    logger = _logger()
    models = [read_model(folder) for folder in model_dirs(layout.stage_models("refined"))]
    models = sorted((m for m in models if m.num_reg_images() >= 2), key=lambda m: m.num_reg_images(), reverse=True)
    with tempfile.TemporaryDirectory(prefix="landmark-sfm-images-") as scratch:
        images = _image_folder(layout, source, storage_options, scratch) if models else None
        _fresh(layout.sparse)
        for index, rec in enumerate(models):
            rec.extract_colors_for_all_images(images)
            write_model(rec, layout.sparse / str(index))
    if models:
        models[0].export_PLY(str(layout.ply))
    summary = [{"model": f"sparse/{i}", "registered": m.num_reg_images(), "points": m.num_points3D(),
                "mean_reprojection_error_px": round(float(m.compute_mean_reprojection_error()), 4),
                "mean_track_length": round(float(m.compute_mean_track_length()), 3)}
               for i, m in enumerate(models)]
    logger.info("export: %d model(s) %s", len(models), [s["registered"] for s in summary])
    return {"models": summary}
