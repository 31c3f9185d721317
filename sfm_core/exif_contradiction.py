"""Whether the view graph contradicts the EXIF focal lengths that a group's cameras start from.

A photo cropped or resized after the shot keeps the EXIF of the whole frame, so its EXIF focal
length reads short by the crop (0.56-0.95 of the truth for synth --nuisances crops), and
ingest's checks (plausible range, aspect against the EXIF pixel size) pass it. Here the
EXIF focal lengths are freed and searched globally against the verified pairs (the
self-calibration cost of sfm_core.focal_search), from two starts: their EXIF values, and the
guess of a camera without EXIF (the coordinate search with dozens of free focal lengths ends
near where it starts: from EXIF read 0.76 of the truth at the median it reached 0.86, from the
guess 1.05). The better of the two fits is tested against the EXIF values with the F ratio of
the sharing test (focal_search.f_ratio): the EXIF is contradicted when freeing fits the
pairs better than chance and moves the focal lengths (CONTRADICTED_ABOVE, MIN_DEPARTURE).
Then every tested camera starts from its freed focal length, as a camera without EXIF, and
pycolmap's joint calibration refines them. All or none: one camera's freed focal length is
noisy (crops read 0.56-0.95 of the truth, freed ones 0.74-1.10 on 14 photos), the joint
calibration is not (within 1 % there), and keeping the EXIF of those whose freed focal length
stayed within 10 % of it kept a quarter of them 15-25 % short.
"""
import copy
from dataclasses import dataclass

import numpy as np
import pycolmap

from sfm_core.cameras import DEFAULT_FOCAL_FACTOR
from sfm_core.focal_search import CalibrationGraph, f_ratio, search_focal_lengths
from sfm_core.verification import VerifiedPair

# Measured (statistic, median departure) over a whole collection's verified pairs. True EXIF
# (synth --n 60 --seed 9): 0.34, 0.010. Crops (synth --n 150 --nuisances crops): 3.22, 0.33.
# EXIF focal lengths tripled (40 photos): 4.62, 0.95.
CONTRADICTED_ABOVE = 1.0
MIN_DEPARTURE = 0.05  # median |log(freed / EXIF)|: EXIF rounds the focal length in mm


@dataclass(frozen=True)
class ExifTest:
    """The test of a group's EXIF focal lengths against its verified pairs."""
    cameras: int  # cameras with an EXIF focal length (not known intrinsics) seen by the pairs
    pairs: int  # verified pairs (with a fundamental matrix) that see them
    statistic: float | None  # None: no more pairs than cameras, too few to tell; EXIF kept
    departure: float  # median |log(freed focal / EXIF focal)| over those cameras
    rejected: dict[int, float]  # camera id: its EXIF focal length (px), when contradicted

    @property
    def contradicted(self) -> bool:
        return self.statistic is not None and self.statistic > CONTRADICTED_ABOVE and self.departure > MIN_DEPARTURE


def reject_contradicted_exif(cameras: list[pycolmap.Camera], camera_of_frame: list[int], pairs: list[VerifiedPair],
                             constant_ids: tuple[int, ...] = ()) -> tuple[list[pycolmap.Camera], ExifTest | None]:
    """Copies of `cameras` where, if the pairs contradict their EXIF focal lengths, those with
    one start from the view graph's focal length instead, as cameras without EXIF; returns
    (cameras, test), test None when no camera has an EXIF focal length seen by a pair.

    cameras: the distinct cameras, those without EXIF already searched
    (focal_search.search_focal_lengths); camera_of_frame[f] indexes them; pairs: verified
    pairs with a fundamental matrix. Cameras of `constant_ids` (known intrinsics) are not tested.
    """
    seen = {camera_of_frame[p.index1] for p in pairs} | {camera_of_frame[p.index2] for p in pairs}
    exif = [k for k, c in enumerate(cameras) if c.has_prior_focal_length and c.camera_id not in constant_ids
            and k in seen]
    if not exif:
        return cameras, None
    graph = CalibrationGraph.of(cameras, camera_of_frame, pairs)
    rows = np.unique(np.concatenate([graph.rows_of(k) for k in exif]))
    given = np.array([c.focal_length for c in cameras], np.float64)
    fits = [_freed(cameras, camera_of_frame, pairs, exif, start) for start in ("exif", "guess")]
    freed = min(fits, key=lambda focal: graph.cost(focal, rows))
    statistic = f_ratio(graph.cost(given, rows), graph.cost(freed, rows), len(exif), len(exif), len(rows))
    departure = float(np.median(np.abs(np.log(freed[exif] / given[exif]))))
    test = ExifTest(len(exif), len(rows), statistic, departure,
                    {cameras[k].camera_id: float(given[k]) for k in exif})
    if not test.contradicted:
        return cameras, ExifTest(test.cameras, test.pairs, statistic, departure, {})
    result = []
    for k, camera in enumerate(cameras):
        if camera.camera_id in test.rejected:
            camera = copy.copy(camera)
            camera.has_prior_focal_length = False
            camera.focal_length = float(freed[k])
        result.append(camera)
    return result, test


def _freed(cameras: list[pycolmap.Camera], camera_of_frame: list[int], pairs: list[VerifiedPair], exif: list[int],
           start: str) -> np.ndarray:
    """Focal lengths (C,) with those of cameras `exif` searched as unknowns from their EXIF
    value ("exif") or from the guess of a camera without EXIF ("guess")."""
    free = []
    for k, camera in enumerate(cameras):
        if k in exif:
            camera = copy.copy(camera)
            camera.has_prior_focal_length = False
            if start == "guess":
                camera.focal_length = DEFAULT_FOCAL_FACTOR * max(camera.width, camera.height)
        free.append(camera)
    # The others are searched again too (search_focal_lengths frees every camera without a
    # prior); they were searched with the EXIF held, so they move with the freed ones.
    return np.array([c.focal_length for c in search_focal_lengths(free, camera_of_frame, pairs)], np.float64)

