"""Registration of single images against the points already triangulated (PnP).

Joint initialisation poses every image at once, and a few can come out wrong (an image at
the end of a sequence whose pairs disagree, say) or not at all (no relative pose to
average). Each such image is posed afresh from its 2D-3D correspondences by LO-RANSAC PnP,
and its pose is replaced where PnP finds clearly more support than the pose it has.
"""
import numpy as np
import pycolmap


def _support(rec: pycolmap.Reconstruction, image: pycolmap.Image, lengths: dict[int, int], max_error_px: float) -> int:
    """Observations of `image` that reproject within max_error_px, counting only points that
    two other images see: a wrong pose vouches for the points made of its own rays (a point
    of two views always fits both), so those cannot speak for it. lengths: {point3D id: track length}."""
    if not image.has_pose:
        return 0
    observed = [p for p in image.get_observation_points2D() if lengths[p.point3D_id] - 1 >= 2]
    if not observed:
        return 0
    xyz = image.cam_from_world() * np.array([rec.points3D[p.point3D_id].xyz for p in observed])
    in_front = xyz[:, 2] > 0
    if not in_front.any():
        return 0
    projected = rec.cameras[image.camera_id].img_from_cam(xyz[in_front])
    keypoints = np.array([p.xy for p in observed])[in_front]
    return int((np.linalg.norm(projected - keypoints, axis=1) < max_error_px).sum())


def register_images(rec: pycolmap.Reconstruction, keypoint_index: np.ndarray, point_of_track: dict[int, int],
                    frames: list[int], min_inliers: int = 30, max_error_px: float = 4.0) -> list[int]:
    """(Re-)pose the images of `frames` by PnP where that beats their current pose.

    keypoint_index: tracks (F, N) int32; point_of_track: {track: point3D id}. Only points that
    other images see at least twice vouch for a pose. Returns the frames whose pose changed;
    their old observations are removed (they were made with a wrong pose).
    """
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = max_error_px
    options.ransac.random_seed = 0
    changed = []
    lengths = {point_id: point.track.length() for point_id, point in rec.points3D.items()}
    for frame in frames:
        image = rec.image(frame + 1)
        observed = {p.point3D_id for p in image.get_observation_points2D()}
        points2D, points3D = [], []
        for track in np.nonzero(keypoint_index[frame] >= 0)[0]:
            point_id = point_of_track.get(int(track))
            # Re-posing an earlier image can delete points (tracks left with one observation).
            if point_id is None or point_id not in lengths or not rec.exists_point3D(point_id):
                continue
            if lengths[point_id] - (point_id in observed) >= 2:
                points2D.append(image.points2D[int(keypoint_index[frame, track])].xy)
                points3D.append(rec.points3D[point_id].xyz)
        if len(points2D) < min_inliers:
            continue
        support = _support(rec, image, lengths, max_error_px)
        if support >= 0.8 * len(points2D):
            continue  # most of the points that vouch for it fit the pose it has: PnP cannot beat it
        result = pycolmap.estimate_and_refine_absolute_pose(
            np.array(points2D), np.array(points3D), rec.cameras[image.camera_id], options)
        if result is None or result["num_inliers"] < min_inliers:
            continue
        if result["num_inliers"] <= 1.25 * support + 10:
            continue
        for index, point2D in enumerate(image.points2D):
            if point2D.has_point3D():
                rec.delete_observation(image.image_id, index)
        registered = image.image_id in set(rec.reg_image_ids())
        rec.frame(image.frame_id).set_cam_from_world(image.camera_id, result["cam_from_world"])
        if not registered:
            rec.register_frame(image.frame_id)
        changed.append(frame)
        lengths = {point_id: point.track.length() for point_id, point in rec.points3D.items()}
    return changed


def extend_tracks(rec: pycolmap.Reconstruction, keypoint_index: np.ndarray, point_of_track: dict[int, int],
                  frames: list[int], max_error_px: float = 4.0) -> int:
    """Add the observations of `frames` to existing points where they reproject well."""
    added = 0
    registered = set(rec.reg_image_ids())
    for frame in frames:
        image = rec.image(frame + 1)
        if image.image_id not in registered:
            continue
        camera, pose = rec.cameras[image.camera_id], image.cam_from_world()
        for track in np.nonzero(keypoint_index[frame] >= 0)[0]:
            point_id = point_of_track.get(int(track))
            keypoint = int(keypoint_index[frame, track])
            if point_id is None or not rec.exists_point3D(point_id) or image.points2D[keypoint].has_point3D():
                continue
            if any(e.image_id == image.image_id for e in rec.points3D[point_id].track.elements):
                continue  # the point already has an observation in this image
            xyz = pose * rec.points3D[point_id].xyz
            projected = camera.img_from_cam(xyz)
            if xyz[2] > 0 and projected is not None and np.linalg.norm(projected - image.points2D[keypoint].xy) < max_error_px:
                rec.add_observation(point_id, pycolmap.TrackElement(image.image_id, keypoint))
                added += 1
    return added
