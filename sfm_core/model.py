"""Building the pycolmap.Reconstruction that the geometry stages share.

Image ids are frame indices + 1; every image keeps all its keypoints as points2D, so a track
observation (frame f, keypoint k) is the TrackElement(f + 1, k).
"""
import numpy as np
import pycolmap


def new_reconstruction(names: list[str], cameras: list[pycolmap.Camera], camera_of_frame: list[int],
                       keypoints: list[np.ndarray], frames: list[int]) -> pycolmap.Reconstruction:
    """A model holding `frames` (indices into names/keypoints), unposed, without points.

    cameras: the distinct cameras; camera_of_frame[f] indexes them; keypoints[f]: (K, 2)
    COLMAP pixel coordinates.
    """
    rec = pycolmap.Reconstruction()
    for frame in frames:
        camera = cameras[camera_of_frame[frame]]
        if not rec.exists_camera(camera.camera_id):
            rec.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=names[frame], keypoints=keypoints[frame].astype(np.float64),
                               camera_id=camera.camera_id, image_id=frame + 1)
        rec.add_image_with_trivial_frame(image)
    return rec


def frame_of_image(image_id: int) -> int:
    return image_id - 1


def clear_points(rec: pycolmap.Reconstruction) -> None:
    for point_id in list(rec.point3D_ids()):
        rec.delete_point3D(point_id)


def point_of_track_map(rec: pycolmap.Reconstruction, keypoint_index: np.ndarray) -> dict[int, int]:
    """{track: point3D id} of the points of rec, found through their first observation.

    keypoint_index: tracks (F, N) int32, as the points were triangulated from.
    """
    track_at = {}
    frames, tracks = np.nonzero(keypoint_index >= 0)
    for frame, track in zip(frames, tracks):
        track_at[(int(frame), int(keypoint_index[frame, track]))] = int(track)
    mapping = {}
    for point_id, point in rec.points3D.items():
        element = point.track.elements[0]
        track = track_at.get((frame_of_image(element.image_id), element.point2D_idx))
        if track is not None:
            mapping[track] = point_id
    return mapping


def with_image_ids(rec: pycolmap.Reconstruction, new_id: dict[int, int]) -> pycolmap.Reconstruction:
    """A copy of rec's registered images (poses kept, cam_from_world), cameras and points, with
    image ids renumbered by new_id {old: new}: a chunk's frames (local ids) become the
    collection's frames (global ids) so that chunk models can be merged."""
    out = pycolmap.Reconstruction()
    for camera in rec.cameras.values():
        out.add_camera_with_trivial_rig(camera)
    for image_id in sorted(rec.reg_image_ids()):
        image = rec.image(image_id)
        copy = pycolmap.Image(name=image.name, keypoints=np.array([p.xy for p in image.points2D], np.float64).reshape(-1, 2),
                              camera_id=image.camera_id, image_id=new_id[image_id])
        out.add_image_with_trivial_frame(copy, image.cam_from_world())
    for point in rec.points3D.values():
        elements = [pycolmap.TrackElement(new_id[e.image_id], e.point2D_idx) for e in point.track.elements]
        out.add_point3D(point.xyz, pycolmap.Track(elements), point.color)
    return out
