"""The stages of one chunk as Prefect tasks, named by stage and chunk: tracks, cameras,
triangulation, bundle adjustment. A chunk's images are its frames 0..F-1 (local), in the
order of the chunk's global frames; its models use local image ids (frame + 1) until the last
stage writes them with the collection's ids (global frame + 1) to models/<chunk>/ for merging.
"""
import json
from dataclasses import dataclass, replace

import numpy as np
import pycolmap

from flows.checkpointing import stage_task
from flows.layout import OutputLayout, chunk_name
from flows.settings import Settings
from flows.stage_io import (fresh, gray_tensor, initial_cameras, keypoint_shape, make_refiner, refinement_settings,
                            stage_logger, usable_rows)
from sfm_core.bundle_adjustment import BUNDLE_ADJUSTERS, refine
from sfm_core.calibration import CalibratedCameras, calibrate_focal_lengths, relative_poses
from sfm_core.chunking import Chunk
from sfm_core.initialization import initialize_poses_best_of, pose_graph_components
from sfm_core.model import new_reconstruction, point_of_track_map, with_image_ids
from sfm_core.rotation_loops import MAX_LOOP_ERROR_DEG, LoopCheck, check_loops
from sfm_core.query_tracks import query_frame_tracks
from sfm_core.track_refinement import refine_tracks
from sfm_core.tracks import tracked_keypoints, tracks_from_pairs
from sfm_core.triangulation import TriangulationSettings, triangulate_tracks
from sfm_core.verification import VerifiedPair
from storage.colmap_model import model_dirs, read_model, write_model
from storage.feature_store import FeatureStore
from storage.images import load_image
from storage.pair_table import read_pairs
from storage.track_store import has_tracks, read_tracks, write_tracks


@dataclass
class ChunkInputs:
    rows: list  # manifest rows of the chunk's frames
    pairs: list[VerifiedPair]  # verified pairs among them, local frame indices
    keypoints: list[np.ndarray]  # (K_f, 2) COLMAP pixel coordinates per frame
    cameras: list[pycolmap.Camera]  # the collection's initial cameras (ids shared by all chunks)
    camera_of_frame: list[int]  # index into cameras, per local frame
    constant_camera_ids: tuple[int, ...]  # cameras of known intrinsics (--intrinsics), held fixed


def load_chunk(layout: OutputLayout, settings: Settings, chunk: Chunk) -> ChunkInputs:
    """The chunk's inputs; where its tracks are written already, the keypoints of their
    observations stand at the tracks' (refined) positions."""
    rows = usable_rows(layout)
    initial = initial_cameras(rows, settings)
    chunk_rows = [rows[f] for f in chunk.frames]
    store = FeatureStore(str(layout.features), settings.features)
    keypoints = [store.read_keypoints(r.sha256) for r in chunk_rows]
    if has_tracks(str(layout.tracks), chunk_name(chunk)):
        keypoints = tracked_keypoints(keypoints, read_tracks(str(layout.tracks), chunk_name(chunk))[1])
    return ChunkInputs(chunk_rows, read_pairs(str(layout.pairs), [r.image_id for r in chunk_rows]),
                       keypoints, initial.cameras, [initial.camera_of_frame[f] for f in chunk.frames],
                       initial.constant_ids)


@stage_task("tracks", ("tracks", "track_refinement", "refiner_sha256"), run_name="tracks-chunk-{chunk.index}")
def make_tracks(layout: OutputLayout, settings: Settings, chunk: Chunk, storage_options: dict | None = None) -> dict:
    """The chunk's tracks (settings.tracks: "query", each query frame's points followed into its
    verified neighbours; "pairs", the verified matches joined), then refined from their query
    frames (settings.track_refinement: "correlation", "learned" or "none")."""
    usable = usable_rows(layout)  # read once: it reads the manifest
    rows = [usable[f] for f in chunk.frames]
    store = FeatureStore(str(layout.features), settings.features)
    features = [store.read(r.sha256) for r in rows]
    pairs = read_pairs(str(layout.pairs), [r.image_id for r in rows])
    gray, scale_xy = [], []
    if settings.tracks == "query" or settings.track_refinement != "none":
        images = [load_image(r.uri, settings.max_image_size, storage_options) for r in rows]
        gray, scale_xy = [gray_tensor(image.pixels) for image in images], [image.scale_xy for image in images]
    if settings.tracks == "query":
        tracks = query_frame_tracks([f.keypoints for f in features], pairs, gray, scale_xy)
    else:
        tracks = tracks_from_pairs([f.keypoints for f in features], pairs)
    coarse = tracks.xy
    if settings.track_refinement != "none":
        followed = np.stack([tracks.keypoint_index[f] >= len(features[f].keypoints) for f in range(len(features))])
        tracks = refine_tracks(tracks, gray, scale_xy, keypoint_shape(tracks, features), make_refiner(settings),
                               settled=followed)
    write_tracks(str(layout.tracks), chunk_name(chunk), np.array([r.image_id for r in rows]), tracks)
    observed = tracks.visibility
    lengths = observed.sum(axis=0)
    mean_length = float(lengths.mean()) if lengths.size else 0.0
    moved = np.linalg.norm(tracks.xy - coarse, axis=-1)[observed]
    confidence = tracks.confidence[observed].astype(np.float64)
    stage_logger().done("tracks %s: %d tracks over %d images (mean length %.2f); %s refinement moved %d of %d "
                        "observations (median %.2f px), mean confidence %.2f", chunk_name(chunk),
                        tracks.keypoint_index.shape[1], len(rows), mean_length, settings.track_refinement,
                        int((moved > 0).sum()), int(observed.sum()), float(np.median(moved)) if moved.size else 0.0,
                        float(confidence.mean()) if confidence.size else 0.0)
    return {"tracks": int(tracks.keypoint_index.shape[1]), "mean_track_length": round(mean_length, 3),
            "observations_moved": int((moved > 0).sum()),
            "mean_confidence": round(float(confidence.mean()), 3) if confidence.size else 0.0}


def _keypoint_index(layout: OutputLayout, chunk: Chunk) -> np.ndarray:
    return read_tracks(str(layout.tracks), chunk_name(chunk))[1].keypoint_index


def _stage_folder(layout: OutputLayout, stage: str, chunk: Chunk):
    return layout.stage_models(stage) / chunk_name(chunk)


@stage_task("cameras", ("camera_model", "shared_cameras", "intrinsics"), run_name="cameras-chunk-{chunk.index}")
def initialize_cameras(layout: OutputLayout, settings: Settings, chunk: Chunk) -> dict:
    """All cameras of each connected group of the chunk posed jointly (the best of a few starts)."""
    inputs = load_chunk(layout, settings, chunk)
    keypoint_index = _keypoint_index(layout, chunk)
    out = fresh(_stage_folder(layout, "cameras", chunk))
    components = pose_graph_components(len(inputs.rows), inputs.pairs)
    posed = []
    split, exif_rejected, broken, contradicted = [], {}, [], {}
    for frames in components:
        calibrated, group_pairs, loops, cut_off = calibrate_and_check_loops(inputs, settings, chunk, frames)
        exif_rejected.update(_log_exif_test(calibrated.exif_test, inputs, frames, chunk))
        split += [test for test in calibrated.sharing_tests if test.split]
        for test in calibrated.sharing_tests:
            evidence = ("too few pairs to tell" if test.statistic is None else
                        f"statistic {test.statistic:.2f}, own focal lengths {100 * (np.exp(test.spread) - 1):.1f} % "
                        f"from the shared one at the median")
            stage_logger().info("cameras %s: %d photos of camera %d %s (%d pairs: %s)", chunk_name(chunk), test.photos,
                                test.camera_id, "calibrate one each" if test.split else "share it", test.pairs,
                                evidence)
        broken += [[inputs.rows[d.index1].name, inputs.rows[d.index2].name] for d in loops.dropped]
        stage_logger().info("cameras %s: %d of %d loops of three pairs close within %.0f deg; %s%s", chunk_name(chunk),
                            loops.closed, loops.loops, MAX_LOOP_ERROR_DEG,
                            "too many broken to judge the pairs by: all kept" if loops.too_poor_to_judge else
                            f"{len(loops.dropped)} pair(s) dropped for breaking more loops than they close",
                            "".join(f"\n  - {inputs.rows[d.index1].name} - {inputs.rows[d.index2].name}: breaks "
                                    f"{d.loops_broken}, closes {d.loops_closed}" for d in loops.dropped[:20]))
        for frame in sorted(cut_off):
            contradicted[inputs.rows[frame].name] = "its relative poses break the rotation loops of its pairs"
            stage_logger().warning("cameras %s: %s left out: %s", chunk_name(chunk), inputs.rows[frame].name,
                                   contradicted[inputs.rows[frame].name])
        frames = [frame for frame in frames if frame not in cut_off]
        rec = initialize_poses_best_of(
            lambda: new_reconstruction([r.name for r in inputs.rows], calibrated.cameras, calibrated.camera_of_frame,
                                       inputs.keypoints, frames), group_pairs, keypoint_index)
        if rec is None:
            stage_logger().warning("camera initialisation failed for a group of %d images of %s",
                                   len(frames), chunk_name(chunk))
            continue
        write_model(rec, out / str(len(posed)))
        posed.append(rec.num_reg_images())
    # Read by the chunk's bundle adjustment: where EXIF was contradicted, the photos were likely
    # cropped after the shot, and their principal points are refined too.
    out.mkdir(parents=True, exist_ok=True)
    (out / EXIF_REJECTED_FILE).write_text(json.dumps(exif_rejected, indent=1))
    unconnected = len(inputs.rows) - sum(len(c) for c in components)
    stage_logger().done("cameras %s: %d images posed jointly in %d group(s) %s; %d with no relative pose; "
                        "%d shared camera(s) split into one per photo", chunk_name(chunk), sum(posed), len(posed),
                        posed, unconnected, len(split))
    return {"groups": len(posed), "posed": sum(posed), "unconnected": unconnected,
            "cameras_split": len(split), "photos_given_own_camera": sum(test.photos for test in split),
            "pairs_breaking_loops": len(broken), "loop_breaking_pairs": broken,
            "left_out_for_contradictions": contradicted, "exif_rejected": exif_rejected}


def calibrate_and_check_loops(inputs: ChunkInputs, settings: Settings, chunk: Chunk, frames: list[int]
                              ) -> tuple[CalibratedCameras, list[VerifiedPair], LoopCheck, set[int]]:
    """A connected group's (frames) focal lengths calibrated, its pairs' relative poses with
    them, and the rotation-loop check of those: (the calibration, the pairs kept, the check,
    the frames cut off), as rotation_loops.check_loops gives them."""
    # A photo whose shared camera is split takes the id after the collection's cameras given by
    # its place in the collection: the same in every chunk, so that chunk models merge.
    own_camera_ids = ([len(inputs.cameras) + 1 + f for f in chunk.frames] if settings.shared_cameras == "auto"
                      else None)
    calibrated = calibrate_focal_lengths(inputs.cameras, inputs.camera_of_frame, inputs.pairs, frames,
                                         inputs.constant_camera_ids, own_camera_ids=own_camera_ids)
    in_group = set(frames)
    group_pairs = relative_poses(calibrated.cameras, calibrated.camera_of_frame, inputs.keypoints,
                                 [p for p in inputs.pairs if p.index1 in in_group])
    return calibrated, *check_loops(len(inputs.rows), group_pairs)


EXIF_REJECTED_FILE = "exif_rejected.json"  # {photo name: why}, in the cameras stage's folder


def _log_exif_test(test, inputs: ChunkInputs, frames: list[int], chunk: Chunk) -> dict[str, str]:
    """Logs the test of a group's EXIF focal lengths (exif_contradiction.ExifTest, or None);
    returns {photo name: why its EXIF focal length was not used} for the group's photos."""
    if test is None:
        return {}
    evidence = ("too few pairs to tell" if test.statistic is None else
                f"statistic {test.statistic:.2f}; the view graph's focal lengths differ from EXIF by a factor "
                f"{np.exp(test.departure):.3f} at the median")
    stage_logger().info("cameras %s: EXIF focal lengths of %d camera(s) %s (%d pairs: %s)", chunk_name(chunk),
                        test.cameras, "contradicted by the view graph" if test.contradicted else "kept",
                        test.pairs, evidence)
    rejected = {}
    for frame in frames:
        camera_id = inputs.cameras[inputs.camera_of_frame[frame]].camera_id
        if camera_id in test.rejected:
            rejected[inputs.rows[frame].name] = (
                f"contradicted by the view graph: EXIF {test.rejected[camera_id]:.0f} px; its group's pairs fit focal "
                f"lengths a factor {np.exp(test.departure):.2f} from their EXIF at the median (statistic "
                f"{test.statistic:.1f})")
    if rejected:
        stage_logger().warning("cameras %s: EXIF focal length of %d photo(s) not used (contradicted by the view "
                               "graph), their principal points refined: %s", chunk_name(chunk), len(rejected),
                               ", ".join(sorted(rejected)[:10]) + (", ..." if len(rejected) > 10 else ""))
    return rejected


@stage_task("triangulation", run_name="triangulation-chunk-{chunk.index}")
def triangulate(layout: OutputLayout, settings: Settings, chunk: Chunk) -> dict:
    keypoint_index = _keypoint_index(layout, chunk)
    out = fresh(_stage_folder(layout, "triangulation", chunk))
    counts = []
    for folder in model_dirs(_stage_folder(layout, "cameras", chunk)):
        rec = read_model(folder)
        created = triangulate_tracks(rec, keypoint_index, np.arange(keypoint_index.shape[1]), TriangulationSettings())
        write_model(rec, out / folder.name)
        counts.append(len(created))
    stage_logger().done("triangulation %s: %d of %d tracks triangulated", chunk_name(chunk), sum(counts),
                        keypoint_index.shape[1])
    return {"points": sum(counts)}


@stage_task("bundle-adjustment", ("bundle_adjuster",), run_name="bundle-adjustment-chunk-{chunk.index}")
def bundle_adjust(layout: OutputLayout, settings: Settings, chunk: Chunk) -> dict:
    """Refinement (BA, filter, PnP re-posing, re-triangulation); the chunk's models are then
    written with the collection's image ids to models/<chunk>/."""
    keypoint_index = _keypoint_index(layout, chunk)
    adjuster = BUNDLE_ADJUSTERS[settings.bundle_adjuster]()
    refinement = refinement_settings(layout, settings)
    if _exif_rejected(layout, chunk):
        refinement = replace(refinement, bundle_adjustment=replace(refinement.bundle_adjustment,
                                                                   refine_principal_point=True))
    global_id = {frame + 1: global_frame + 1 for frame, global_frame in enumerate(chunk.frames)}
    out = fresh(layout.chunk_models / chunk_name(chunk))
    filtered = retriangulated = dropped = reposed = 0
    undistorted: set[int] = set()
    models = []
    for folder in model_dirs(_stage_folder(layout, "triangulation", chunk)):
        rec = read_model(folder)
        report = refine(rec, keypoint_index, point_of_track_map(rec, keypoint_index), adjuster, refinement)
        write_model(with_image_ids(rec, global_id), out / folder.name)
        filtered += report.observations_filtered
        retriangulated += report.points_retriangulated
        dropped += len(report.frames_dropped)
        reposed += len(report.frames_reposed)
        undistorted.update(report.cameras_without_distortion)
        models.append({"registered": rec.num_reg_images(), "points": rec.num_points3D(),
                       "mean_reprojection_error_px": round(float(rec.compute_mean_reprojection_error()), 4)})
    stage_logger().done("bundle-adjustment %s (%s): %d observations filtered, %d points re-triangulated, "
                        "%d images re-posed by PnP, %d dropped; %d cameras without radial distortion (their "
                        "observations stay near the image centre); models %s", chunk_name(chunk), adjuster.name,
                        filtered, retriangulated, reposed, dropped, len(undistorted), [m["registered"] for m in models])
    return {"solver": adjuster.name, "images": len(chunk.frames), "models": models,
            "registered": max((m["registered"] for m in models), default=0),
            "points": sum(m["points"] for m in models),
            "observations_filtered": filtered, "points_retriangulated": retriangulated,
            "images_reposed": reposed, "images_dropped": dropped, "cameras_without_distortion": len(undistorted)}


def _exif_rejected(layout: OutputLayout, chunk: Chunk) -> dict[str, str]:
    """The cameras stage's {photo name: why} of the chunk's contradicted EXIF focal lengths."""
    path = _stage_folder(layout, "cameras", chunk) / EXIF_REJECTED_FILE
    return json.loads(path.read_text()) if path.exists() else {}


CHUNK_STAGES = (make_tracks, initialize_cameras, triangulate, bundle_adjust)
