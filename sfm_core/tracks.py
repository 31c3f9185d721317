"""Tracks: verified matches of all pairs joined into multi-view point tracks.

A track is stored densely per frame, as VGGSfM holds them: `keypoint_index: (F, N) int32`,
the keypoint of track n in frame f or -1 where the track is not visible.
"""
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sfm_core.verification import VerifiedPair


def build_tracks(num_keypoints: list[int], pairs: list[VerifiedPair], min_length: int = 2) -> np.ndarray:
    """Join the inlier matches of all pairs into tracks.

    num_keypoints: keypoints per frame (F entries). Returns keypoint_index (F, N) int32.
    Where a connected component holds two keypoints of one frame the frame is ambiguous for
    that track: its observations are dropped, the rest of the track is kept.
    """
    offsets = np.concatenate([[0], np.cumsum(num_keypoints)]).astype(np.int64)
    total = int(offsets[-1])
    if not pairs or total == 0:
        return np.full((len(num_keypoints), 0), -1, np.int32)
    rows = np.concatenate([offsets[p.index1] + p.inliers[:, 0] for p in pairs])
    cols = np.concatenate([offsets[p.index2] + p.inliers[:, 1] for p in pairs])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(total, total))
    _, labels = connected_components(graph, directed=False)

    nodes = np.unique(np.concatenate([rows, cols]))
    frames = np.searchsorted(offsets, nodes, side="right") - 1
    keypoints = nodes - offsets[frames]
    components = labels[nodes]

    # Drop (component, frame) cells that hold more than one keypoint.
    cell = components.astype(np.int64) * len(num_keypoints) + frames
    _, cell_inverse, cell_counts = np.unique(cell, return_inverse=True, return_counts=True)
    unique_cell = cell_counts[cell_inverse] == 1
    components, frames, keypoints = components[unique_cell], frames[unique_cell], keypoints[unique_cell]

    # Keep components still seen in at least `min_length` frames.
    track_ids, track_of_node, lengths = np.unique(components, return_inverse=True, return_counts=True)
    long_enough = lengths >= min_length
    new_id = np.cumsum(long_enough) - 1
    keep = long_enough[track_of_node]
    keypoint_index = np.full((len(num_keypoints), int(long_enough.sum())), -1, np.int32)
    keypoint_index[frames[keep], new_id[track_of_node[keep]]] = keypoints[keep]
    return keypoint_index


def track_xy(keypoint_index: np.ndarray, keypoints: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Positions and visibility of tracks.

    keypoint_index: (F, N) int32; keypoints[f]: (K_f, 2). Returns xy (F, N, 2) float32
    (NaN where invisible) and visibility (F, N) bool.
    """
    num_frames, num_tracks = keypoint_index.shape
    xy = np.full((num_frames, num_tracks, 2), np.nan, np.float32)
    visible = keypoint_index >= 0
    for frame in range(num_frames):
        xy[frame, visible[frame]] = keypoints[frame][keypoint_index[frame, visible[frame]]]
    return xy, visible


def track_support(keypoint_index: np.ndarray, num_keypoints: list[int],
                  pairs: list[VerifiedPair]) -> tuple[np.ndarray, np.ndarray]:
    """How well each observation of a track is supported by the verified matches.

    keypoint_index: (F, N) int32 tracks built from `pairs`. Returns
    - confidence (F, N) float16: for a visible observation, the fraction of the track's other
      observations it is matched to directly by a verified pair (1 = matched to all of them);
      0 where the track is not visible;
    - query_frame (N,) int32: the frame of the track's best-connected observation, the one the
      track is followed from (VGGSfM's query frame), ties to the first frame.
    """
    num_frames, num_tracks = keypoint_index.shape
    track_of_keypoint = [np.full(n, -1, np.int64) for n in num_keypoints]
    for frame in range(num_frames):
        visible = keypoint_index[frame] >= 0
        track_of_keypoint[frame][keypoint_index[frame, visible]] = np.nonzero(visible)[0]
    degree = np.zeros((num_frames, num_tracks), np.int32)
    for pair in pairs:
        track1 = track_of_keypoint[pair.index1][pair.inliers[:, 0]]
        track2 = track_of_keypoint[pair.index2][pair.inliers[:, 1]]
        same = (track1 >= 0) & (track1 == track2)  # matches dropped as ambiguous have no track
        np.add.at(degree[pair.index1], track1[same], 1)
        np.add.at(degree[pair.index2], track2[same], 1)
    others = np.maximum((keypoint_index >= 0).sum(axis=0) - 1, 1)
    confidence = np.minimum(degree / others, 1.0).astype(np.float16)
    query_frame = degree.argmax(axis=0).astype(np.int32) if num_tracks else np.zeros(0, np.int32)
    return confidence, query_frame


@dataclass
class Tracks:
    """The tracks of a group of F frames, as tracks.zarr stores them (see storage.track_store)."""
    keypoint_index: np.ndarray  # (F, N) int32, -1 where not visible
    xy: np.ndarray  # (F, N, 2) float32 COLMAP pixel coordinates, NaN where not visible
    visibility: np.ndarray  # (F, N) bool
    confidence: np.ndarray  # (F, N) float16 in [0, 1]
    query_frame: np.ndarray  # (N,) int32


def tracks_from_pairs(keypoints: list[np.ndarray], pairs: list[VerifiedPair]) -> Tracks:
    """All verified matches of a group joined into tracks. keypoints[f]: (K_f, 2)."""
    num_keypoints = [len(k) for k in keypoints]
    keypoint_index = build_tracks(num_keypoints, pairs)
    xy, visibility = track_xy(keypoint_index, keypoints)
    confidence, query_frame = track_support(keypoint_index, num_keypoints, pairs)
    return Tracks(keypoint_index, xy, visibility, confidence, query_frame)


def tracked_keypoints(keypoints: list[np.ndarray], tracks: Tracks) -> list[np.ndarray]:
    """Copies of each frame's keypoints (K_f, 2) with those in a track moved to the track's
    position there (tracks.xy, refined): the observations the geometry stages then use.
    Observations found where no keypoint was detected (indices from K_f on, see
    sfm_core.query_tracks) are appended at their positions."""
    moved = []
    for frame, points in enumerate(keypoints):
        visible = tracks.visibility[frame]
        count = max(len(points), int(tracks.keypoint_index[frame, visible].max(initial=-1)) + 1)
        points = np.concatenate([np.asarray(points, np.float32), np.zeros((count - len(points), 2), np.float32)])
        points[tracks.keypoint_index[frame, visible]] = tracks.xy[frame, visible]
        moved.append(points)
    return moved
