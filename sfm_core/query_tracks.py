"""Tracks as VGGSfM makes them: each query frame's points followed into every photo that its
verified pairs reach.

A track is one query point and where it is seen, one observation a photo. The frames take
turns as query frame, the best connected first (most verified inliers); a frame's query points
are its keypoints that no earlier track holds and that the matcher matched into at least one
verified neighbour. Each query point is then followed:
- by the matches: into the query frame's neighbours, and from every photo it is seen in on
  into that photo's neighbours, breadth first, through every photo the verified pairs reach
  (a photo keeps the first keypoint the track reaches there: unlike joining all matches into
  connected components, two keypoints of one photo never make a track ambiguous);
- where the matcher missed it in one of the query frame's neighbours, by correlation, as a
  tracker would, without needing a detection there: the pair's nearest matches give a local
  affine map from the query frame to the neighbour; the query patch is correlated (NCC) over a
  window around the mapped point, sampled through that map; the peak is kept if it correlates
  well and lies on the query point's epipolar line.
Found points that no keypoint was detected at become new keypoints of that photo, numbered
after its detected ones (`keypoint_index >= K_f`); `tracks.xy` holds where they are.

The matcher is called only on the candidate pairs, as before: a chunk of F photos costs its
candidate pairs' calls (F (F - 1) / 2 matched exhaustively, at most F k a round with retrieval's
k neighbours and its rounds), and following costs one correlation per query point and
neighbour that the matches missed, without the matcher.

Conventions: keypoints and xy in full-resolution COLMAP pixels (the centre of the top-left
pixel is (0.5, 0.5)); `images[f]` grayscale at the resolution the features came from,
`scale_xy[f]` the factor from it to full resolution; fundamental matrices map frame-1 points to
epipolar lines in frame 2, as the verified pairs store them.
"""
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from sfm_core.track_refinement import correlation, peak_offset, sample_patches
from sfm_core.tracks import Tracks
from sfm_core.verification import VerifiedPair


@dataclass(frozen=True)
class FollowSettings:
    patch_radius: int = 5  # query patches of (2r + 1)^2 pixels, the features' resolution
    search_radius: int = 6  # pixels around the mapped point that the patch is tried at
    min_correlation: float = 0.9  # NCC a found point must reach
    max_epipolar_px: float = 2.0  # from the query point's epipolar line, full resolution
    affine_neighbours: int = 8  # matches the local affine map is fitted to
    max_affine_residual_px: float = 3.0  # median misfit of those matches; beyond it the map is not local
    claim_radius_px: float = 1.5  # a detected keypoint this close to a found point is the same point
    # Verified pairs a track may cross from its query frame by matches: 1 reaches the query
    # frame's neighbours, 2 also their neighbours, ...; None: every photo they reach.
    match_hops: int | None = None


@dataclass
class _Link:
    """A verified pair seen from one of its frames: matches (K, 2) [own keypoint, other's]."""
    other: int
    matches: np.ndarray
    fundamental: np.ndarray | None  # own points -> epipolar lines in the other frame


def query_frame_tracks(keypoints: list[np.ndarray], pairs: list[VerifiedPair], images: list[torch.Tensor],
                       scale_xy: list[tuple[float, float]], settings: FollowSettings = FollowSettings()) -> Tracks:
    """The tracks of a group of frames. keypoints[f]: (K_f, 2). Returns Tracks whose
    confidence is 1 for matched observations and the correlation for followed ones."""
    num_frames = len(keypoints)
    links = _links(num_frames, pairs)
    held = [np.zeros(len(k), bool) for k in keypoints]  # detected keypoints some track holds
    trees = [cKDTree(k) if len(k) else None for k in keypoints]
    extra_xy = [[] for _ in range(num_frames)]  # followed points, appended after the detected keypoints
    columns, positions, confidences, query_frames = [], [], [], []
    inliers = np.array([sum(len(link.matches) for link in links[f]) for f in range(num_frames)])
    for query in np.argsort(-inliers, kind="stable"):
        index = np.full((num_frames, len(keypoints[query])), -1, np.int64)
        xy = np.full((num_frames, len(keypoints[query]), 2), np.nan, np.float32)
        score = np.zeros((num_frames, len(keypoints[query])), np.float32)
        for link in links[query]:
            free = ~held[query][link.matches[:, 0]] & ~held[link.other][link.matches[:, 1]]
            index[link.other, link.matches[free, 0]] = link.matches[free, 1]
        points = np.nonzero((index >= 0).any(axis=0))[0]
        if not len(points):
            continue
        _reach_through_matches(index, points, query, links, held, settings.match_hops)
        xy[:, points] = _positions(index[:, points], keypoints, xy[:, points])
        score[:, points] = np.where(index[:, points] >= 0, 1.0, 0.0)
        for link in links[query]:
            missing = points[index[link.other, points] < 0]
            found, where, ncc = _follow(keypoints[query], keypoints[link.other], images[query], images[link.other],
                                        scale_xy[query], scale_xy[link.other], link, missing, settings)
            if not len(found):
                continue
            first_new = len(keypoints[link.other]) + len(extra_xy[link.other])
            index[link.other, found] = first_new + np.arange(len(found))
            xy[link.other, found] = where
            score[link.other, found] = ncc
            extra_xy[link.other].extend(where)
            _hold_nearby(held[link.other], trees[link.other], where, settings.claim_radius_px)
        index[query, points] = points
        xy[query, points] = keypoints[query][points]
        score[query, points] = 1.0
        for frame in range(num_frames):
            detected = index[frame, points]
            detected = detected[(detected >= 0) & (detected < len(keypoints[frame]))]
            held[frame][detected] = True
        columns.append(index[:, points])
        positions.append(xy[:, points])
        confidences.append(score[:, points])
        query_frames.append(np.full(len(points), query, np.int32))
    if not columns:
        return Tracks(np.full((num_frames, 0), -1, np.int32), np.zeros((num_frames, 0, 2), np.float32),
                      np.zeros((num_frames, 0), bool), np.zeros((num_frames, 0), np.float16), np.zeros(0, np.int32))
    keypoint_index = np.concatenate(columns, axis=1).astype(np.int32)
    return Tracks(keypoint_index, np.concatenate(positions, axis=1), keypoint_index >= 0,
                  np.concatenate(confidences, axis=1).astype(np.float16), np.concatenate(query_frames))


def _reach_through_matches(index: np.ndarray, points: np.ndarray, query: int, links: list[list[_Link]],
                           held: list[np.ndarray], hops: int | None) -> None:
    """Extend the query points' tracks (columns `points` of index (F, K_query), -1 where not
    seen) from the frames they are seen in to those frames' verified neighbours, by the
    matches, breadth first, up to `hops` pairs from the query frame. A frame keeps the first
    keypoint a track reaches there; a keypoint goes to one track."""
    frontier = [link.other for link in links[query]]
    reached = {query, *frontier}
    hop = 1
    while frontier and (hops is None or hop < hops):
        hop += 1
        next_frontier = []
        for frame in frontier:
            track_of = np.full(len(held[frame]), -1, np.int64)
            seen = points[(index[frame, points] >= 0) & (index[frame, points] < len(held[frame]))]
            track_of[index[frame, seen]] = seen
            for link in links[frame]:
                if link.other == query:
                    continue
                other = link.other
                taken = held[other].copy()
                taken[index[other, points][(index[other, points] >= 0) & (index[other, points] < len(taken))]] = True
                track = track_of[link.matches[:, 0]]
                target = link.matches[:, 1]
                extend = (track >= 0) & ~taken[target]
                extend[extend] &= index[other, track[extend]] < 0
                index[other, track[extend]] = target[extend]
                if other not in reached:
                    reached.add(other)
                    next_frontier.append(other)
        frontier = next_frontier


def _positions(index: np.ndarray, keypoints: list[np.ndarray], xy: np.ndarray) -> np.ndarray:
    """xy (F, M, 2) with every matched observation (0 <= index < K_f) at its keypoint."""
    xy = xy.copy()
    for frame, frame_keypoints in enumerate(keypoints):
        matched = (index[frame] >= 0) & (index[frame] < len(frame_keypoints))
        xy[frame, matched] = frame_keypoints[index[frame, matched]]
    return xy


def _links(num_frames: int, pairs: list[VerifiedPair]) -> list[list[_Link]]:
    links = [[] for _ in range(num_frames)]
    for pair in pairs:
        matches = pair.inliers.astype(np.int64)
        fundamental = pair.fundamental
        links[pair.index1].append(_Link(pair.index2, matches, fundamental))
        links[pair.index2].append(_Link(pair.index1, matches[:, ::-1], None if fundamental is None else fundamental.T))
    return links


def _hold_nearby(held: np.ndarray, tree: cKDTree | None, points: np.ndarray, radius: float) -> None:
    """Mark the detected keypoints within radius of found points as held: the same 3D point
    must not start a second track from there."""
    if tree is None or not len(points):
        return
    distance, nearest = tree.query(points, distance_upper_bound=radius)
    held[nearest[np.isfinite(distance)]] = True


def _follow(keypoints_q: np.ndarray, keypoints_j: np.ndarray, image_q: torch.Tensor, image_j: torch.Tensor,
            scale_q: tuple[float, float], scale_j: tuple[float, float], link: _Link, queries: np.ndarray,
            settings: FollowSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query keypoints of q (indices) found in j: (indices found, xy (M, 2) full resolution, NCC (M,))."""
    nothing = np.zeros(0, np.int64), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    if link.fundamental is None or len(link.matches) < settings.affine_neighbours or not len(queries):
        return nothing
    source = keypoints_q[queries].astype(np.float64)
    mapped, linear, residual = local_affines(keypoints_q[link.matches[:, 0]].astype(np.float64),
                                             keypoints_j[link.matches[:, 1]].astype(np.float64), source,
                                             settings.affine_neighbours)
    height, width = image_j.shape
    full_size = np.array([width * scale_j[0], height * scale_j[1]])
    usable = (residual <= settings.max_affine_residual_px) & (mapped > 0).all(axis=1) & (mapped < full_size).all(axis=1)
    if not usable.any():
        return nothing
    queries, source, mapped, linear = queries[usable], source[usable], mapped[usable], linear[usable]
    # The map in features' pixels: an offset in q's patch -> an offset in j's image.
    to_j = np.diag(1 / np.asarray(scale_j)) @ linear @ np.diag(np.asarray(scale_q))
    radius = settings.patch_radius
    patch = sample_patches(image_q, torch.as_tensor(source / scale_q, dtype=torch.float32),
                           torch.eye(2).expand(len(queries), 2, 2), radius)
    window = sample_patches(image_j, torch.as_tensor(mapped / scale_j, dtype=torch.float32),
                            torch.as_tensor(to_j, dtype=torch.float32), radius + settings.search_radius)
    scores = correlation(patch, window)
    offset = peak_offset(scores).numpy().astype(np.float64)
    ncc = scores.flatten(1).max(dim=1).values.numpy()
    found = (ncc >= settings.min_correlation) & (np.abs(offset) <= settings.search_radius - 0.5).all(axis=1)
    where = (mapped / scale_j + np.einsum("mij,mj->mi", to_j, offset)) * scale_j
    found &= epipolar_distance(link.fundamental, source, where) <= settings.max_epipolar_px
    return queries[found], where[found].astype(np.float32), ncc[found].astype(np.float32)


def local_affines(source: np.ndarray, target: np.ndarray, points: np.ndarray,
                  neighbours: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The least-squares affine map target ~ A (source - p) + t fitted to the `neighbours`
    matches nearest each point p. source, target: (K, 2) matched points; points (M, 2).
    Returns t (M, 2) (where p maps to), A (M, 2, 2), and the fit's median residual (M,)."""
    k = min(neighbours, len(source))
    _, nearest = cKDTree(source).query(points, k=k)
    nearest = nearest.reshape(len(points), k)
    offsets = source[nearest] - points[:, None, :]
    design = np.concatenate([offsets, np.ones(offsets.shape[:2] + (1,))], axis=2)  # (M, k, 3)
    normal = np.einsum("mki,mkj->mij", design, design) + 1e-6 * np.eye(3)
    solution = np.linalg.solve(normal, np.einsum("mki,mkj->mij", design, target[nearest]))  # (M, 3, 2)
    residual = np.linalg.norm(np.einsum("mki,mij->mkj", design, solution) - target[nearest], axis=2)
    return solution[:, 2, :], np.transpose(solution[:, :2, :], (0, 2, 1)), np.median(residual, axis=1)


def epipolar_distance(fundamental: np.ndarray, points1: np.ndarray, points2: np.ndarray) -> np.ndarray:
    """(M,) the larger of the two points' distances from the other's epipolar line, in pixels."""
    h1 = np.c_[points1, np.ones(len(points1))]
    h2 = np.c_[points2, np.ones(len(points2))]
    lines2, lines1 = h1 @ fundamental.T, h2 @ fundamental
    algebraic = np.abs(np.sum(h2 * lines2, axis=1))
    return np.maximum(algebraic / np.hypot(lines2[:, 0], lines2[:, 1]).clip(1e-12),
                      algebraic / np.hypot(lines1[:, 0], lines1[:, 1]).clip(1e-12))
