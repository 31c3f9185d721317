"""Joint camera initialisation: all cameras of a group at once, no image is special.

Rotation averaging over the relative rotations of verified pairs, then global positioning
from the tracks (GLOMAP's formulation, solved by pycolmap), as opposed to COLMAP's
incremental registration one image at a time.
"""
import numpy as np
import pycolmap
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sfm_core.verification import VerifiedPair


def pose_graph_components(num_frames: int, pairs: list[VerifiedPair], min_size: int = 2) -> list[list[int]]:
    """Frames connected by pairs with a relative pose, largest group first."""
    posed = [p for p in pairs if p.rotation_xyzw is not None]
    if not posed:
        return []
    rows = [p.index1 for p in posed]
    cols = [p.index2 for p in posed]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_frames, num_frames))
    _, labels = connected_components(graph, directed=False)
    linked = set(rows) | set(cols)
    groups: dict[int, list[int]] = {}
    for frame in sorted(linked):
        groups.setdefault(int(labels[frame]), []).append(frame)
    return sorted((g for g in groups.values() if len(g) >= min_size), key=len, reverse=True)


def initialize_poses(rec: pycolmap.Reconstruction, pairs: list[VerifiedPair],
                     keypoint_index: np.ndarray, seed: int = 0) -> bool:
    """Pose every image of `rec` jointly; returns False if the solvers fail.

    rec: images with ids frame + 1 (see sfm_core.model); keypoint_index: tracks (F, N) int32.
    Leaves rec posed (cam_from_world) with the global-positioning points in it.
    """
    image_ids = set(rec.images.keys())
    pose_graph = pycolmap.PoseGraph()
    for pair in pairs:
        id1, id2 = pair.index1 + 1, pair.index2 + 1
        if pair.rotation_xyzw is None or id1 not in image_ids or id2 not in image_ids:
            continue
        edge = pycolmap.PoseGraphEdge(pycolmap.Rigid3d(pycolmap.Rotation3d(pair.rotation_xyzw), pair.translation))
        edge.num_matches = len(pair.inliers)
        pose_graph.add_edge(id1, id2, edge)

    rotation_options = pycolmap.RotationEstimatorOptions()
    rotation_options.random_seed = seed
    # A pair of 200 inliers says more than one of 20: weak pairs of a weakly seen image can
    # outvote its one strong pair under uniform weights (seen on ETH3D pipes).
    rotation_options.reweighting = pycolmap.RotationAveragingReweighting.INLIER_MATCH_COUNT
    if not pycolmap.run_rotation_averaging(rotation_options, pose_graph, rec, []):
        return False

    frames = np.array(sorted(i - 1 for i in image_ids))
    tracks = keypoint_index[frames]
    for column in np.nonzero((tracks >= 0).sum(axis=0) >= 3)[0]:
        seen = np.nonzero(tracks[:, column] >= 0)[0]
        elements = [pycolmap.TrackElement(int(frames[r]) + 1, int(tracks[r, column])) for r in seen]
        rec.add_point3D(np.zeros(3), pycolmap.Track(elements))

    position_options = pycolmap.GlobalPositionerOptions()
    position_options.use_gpu = False
    position_options.random_seed = seed
    return pycolmap.run_global_positioning(position_options, pose_graph, rec)
