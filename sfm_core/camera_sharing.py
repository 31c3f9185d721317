"""Whether photos that could share a camera do: decided by the view graph, not by their size.

Photos of one size without an EXIF focal length start with one shared camera
(sfm_core.cameras.camera_groups, shared="auto"). Internet photos come in a few standard
sizes, so one size is no evidence of one camera. Here each such photo's focal length is
freed and searched near the shared one against the verified pairs (the self-calibration cost
of sfm_core.focal_search). A group keeps its shared camera unless the freed focal lengths fit
its pairs better than their number explains and differ from the shared one (SPLIT_ABOVE,
MIN_SPREAD); then each of its photos takes a camera of its own, starting from its freed
focal length.
"""
import copy
from dataclasses import dataclass

import numpy as np
import pycolmap

from sfm_core.focal_search import CalibrationGraph, f_ratio, golden_section
from sfm_core.verification import VerifiedPair

# A group is split, each of its photos taking a camera of its own, when freeing their focal
# lengths both fits the pairs better than chance and moves them:
# - the statistic, an F ratio (the cost that freeing removes, per freed unknown, over the cost
#   left, per pair beyond the unknowns), is above SPLIT_ABOVE: each freed unknown removes more
#   than a pair's worth of what is left, more than noise does on average;
# - the spread, the median |log(own / shared focal length)| over the photos, is above MIN_SPREAD.
# Measured with 0.3.0's verified pairs (statistic, spread). One camera: the photo sets
# fountain_p11, temple_sparse_ring, pipes, statue, kitchen, apple and cake 0.07-0.53,
# 0.001-0.005 (cake 0.055); 60 synthetic photos of one camera (synth --one-camera) 0.09, 0.001;
# 14 photos of one camera, exact projections with 0.5 px noise, 8 seeds
# (tests/test_camera_sharing.py) 0.7-1.95 (an F ratio under the null), 0.0005-0.0009. Many
# cameras (synth --nuisances no-exif, focal lengths 0.69-1.30 x the width), groups of 4-18
# photos in chunks of --n 40, 60 (--seed 7) and 150: 1.37-18.8, 0.017-0.41.
SPLIT_ABOVE = 1.0
MIN_SPREAD = 0.01
_SEARCH_FACTOR = 1.6  # a photo's own focal length is searched within shared / 1.6 .. shared x 1.6
_SWEEPS = 3


@dataclass(frozen=True)
class SharingTest:
    """The test of one shared camera of photos without an EXIF focal length."""
    camera_id: int
    photos: int
    pairs: int  # verified pairs (with a fundamental matrix) that see its photos
    statistic: float | None  # None: no more pairs than photos, too few to tell; kept shared
    spread: float  # median |log(freed focal / shared focal)| over its photos

    @property
    def split(self) -> bool:
        return self.statistic is not None and self.statistic > SPLIT_ABOVE and self.spread > MIN_SPREAD


def split_unshared_cameras(cameras: list[pycolmap.Camera], camera_of_frame: list[int], pairs: list[VerifiedPair],
                           frames: list[int], own_camera_ids: list[int], constant_ids: tuple[int, ...] = ()
                           ) -> tuple[list[pycolmap.Camera], list[int], list[SharingTest]]:
    """The shared cameras without a prior focal length whose photos' pairs say they are not one
    camera, replaced by a camera per photo; returns (cameras, camera_of_frame, tests).

    cameras: the distinct cameras, unknown focal lengths already searched
    (focal_search.search_focal_lengths); camera_of_frame[f] indexes them; pairs: verified pairs
    with a fundamental matrix among `frames`; own_camera_ids[f]: the id frame f's camera takes
    if its group is split, unique in the collection and the same in every chunk so that chunk
    models merge. The returned cameras are `cameras` followed by the new ones.
    """
    members: dict[int, list[int]] = {}
    for frame in frames:
        members.setdefault(camera_of_frame[frame], []).append(frame)
    candidates = {k: group for k, group in members.items() if len(group) > 1
                  and not cameras[k].has_prior_focal_length and cameras[k].camera_id not in constant_ids}
    if not candidates or not pairs:
        return cameras, list(camera_of_frame), []

    # A camera per candidate photo, at its group's focal length.
    freed, freed_of_frame = list(cameras), list(camera_of_frame)
    for k, group in candidates.items():
        for frame in group:
            camera = copy.copy(cameras[k])
            camera.camera_id = own_camera_ids[frame]
            freed_of_frame[frame] = len(freed)
            freed.append(camera)
    graph = CalibrationGraph.of(freed, freed_of_frame, pairs)
    shared_focal = np.array([c.focal_length for c in freed], np.float64)
    focal = _search_near(graph, shared_focal, sorted(freed_of_frame[f] for g in candidates.values() for f in g))

    tests, result, result_of_frame = [], list(cameras), list(camera_of_frame)
    for k, group in candidates.items():
        rows = np.unique(np.concatenate([graph.rows_of(freed_of_frame[f]) for f in group]))
        freed_ids = [freed_of_frame[f] for f in group]
        test = SharingTest(cameras[k].camera_id, len(group), len(rows),
                           f_ratio(graph.cost(shared_focal, rows), graph.cost(focal, rows), len(group) - 1,
                                   len(group), len(rows)),
                           float(np.median(np.abs(np.log(focal[freed_ids] / shared_focal[freed_ids])))))
        tests.append(test)
        # All or none: a photo whose own focal length stayed near the shared one may be stuck
        # there rather than of the same camera (keeping those shared cost --n 150 AUC@5 0.99 -> 0.92).
        if test.split:
            for frame in group:
                camera = freed[freed_of_frame[frame]]
                camera.focal_length = float(focal[freed_of_frame[frame]])
                result_of_frame[frame] = len(result)
                result.append(camera)
    return result, result_of_frame, tests


def _search_near(graph: CalibrationGraph, start: np.ndarray, free: list[int]) -> np.ndarray:
    """Focal lengths (C,) with those of cameras `free` searched one at a time near `start`, a
    few sweeps; a step never raises the cost (the search keeps the better of old and new)."""
    focal = start.copy()
    for _ in range(_SWEEPS):
        for k in free:
            rows = graph.rows_of(k)
            if not len(rows):
                continue
            found = golden_section(lambda value: graph.cost_with(focal, k, value, rows),
                                   start[k] / _SEARCH_FACTOR, start[k] * _SEARCH_FACTOR)
            if graph.cost_with(focal, k, found, rows) < graph.cost(focal, rows):
                focal[k] = found
    return focal

