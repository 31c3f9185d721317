"""Relative rotations are checked around the view graph's loops before rotation averaging."""
import flows  # noqa: F401  (torch before pycolmap)
import numpy as np
from scipy.spatial.transform import Rotation

from sfm_core.rotation_loops import MAX_LOOP_ERROR_DEG, check_loops, drop_loop_breaking_pairs
from sfm_core.verification import VerifiedPair


def ring_pairs(n: int, seed: int = 0, noise_deg: float = 0.5, reach: int = 3) -> tuple[list, list[VerifiedPair]]:
    """Cameras with random orientations (cam_from_world); every pair of cameras up to `reach`
    apart along the ring verified, its relative rotation off by up to `noise_deg`."""
    rng = np.random.default_rng(seed)
    world = [Rotation.random(random_state=rng) for _ in range(n)]
    pairs = []
    for i in range(n):
        for step in range(1, reach + 1):
            j = (i + step) % n
            noise = Rotation.from_rotvec(rng.normal(0, np.radians(noise_deg) / 2, 3))
            relative = noise * world[j] * world[i].inv()  # cam(j)_from_cam(i)
            first, second, rotation = (i, j, relative) if i < j else (j, i, relative.inv())
            pairs.append(VerifiedPair(first, second, 100, np.zeros((100 + i, 2), np.uint32), "CALIBRATED",
                                      rotation.as_quat(), np.array([1.0, 0, 0]), None))
    return world, pairs


def with_rotation(pair: VerifiedPair, rotation: Rotation) -> VerifiedPair:
    return pair.with_relative_pose(rotation.as_quat(), pair.translation)


def test_consistent_rotations_keep_every_pair():
    _, pairs = ring_pairs(12)
    kept, check = drop_loop_breaking_pairs(pairs)
    assert kept == pairs and check.dropped == [] and check.loops == check.closed > 0


def test_a_doppelganger_pair_is_dropped_and_only_it():
    _, pairs = ring_pairs(12)
    # Photos 3 and 5 matched on the far side of a symmetric building: their relative rotation
    # is off by a half turn about the vertical.
    index = next(k for k, p in enumerate(pairs) if (p.index1, p.index2) == (3, 5))
    flipped = Rotation.from_rotvec([0, np.pi, 0]) * Rotation.from_quat(pairs[index].rotation_xyzw)
    pairs[index] = with_rotation(pairs[index], flipped)
    kept, check = drop_loop_breaking_pairs(pairs)
    assert [(d.index1, d.index2) for d in check.dropped] == [(3, 5)]
    assert check.dropped[0].loops_broken >= 2 and check.dropped[0].loops_closed == 0
    assert len(kept) == len(pairs) - 1 and all((p.index1, p.index2) != (3, 5) for p in kept)


def test_a_photo_posed_only_by_wrong_pairs_loses_them_all():
    _, pairs = ring_pairs(12)
    # Each pair of photo 7 off by its own 20-40 degrees (one wrong by the same turn for all
    # would only turn photo 7: its loops would close).
    rng = np.random.default_rng(5)
    def wrong() -> Rotation:
        axis = rng.normal(size=3)
        return Rotation.from_rotvec(np.radians(rng.uniform(20, 40)) * axis / np.linalg.norm(axis))

    pairs = [with_rotation(p, wrong() * Rotation.from_quat(p.rotation_xyzw)) if 7 in (p.index1, p.index2) else p
             for p in pairs]
    kept, check = drop_loop_breaking_pairs(pairs)
    assert {(d.index1, d.index2) for d in check.dropped} == {(p.index1, p.index2) for p in pairs
                                                             if 7 in (p.index1, p.index2)}
    assert all(7 not in (p.index1, p.index2) for p in kept)
    # Photo 7 is posed by contradicted pairs only: it is left out, the others stay linked.
    assert check_loops(12, pairs)[0] == kept and check_loops(12, pairs)[2] == {7}


def test_noise_within_the_bound_drops_nothing_and_pairs_in_no_loop_stay():
    _, pairs = ring_pairs(10, noise_deg=MAX_LOOP_ERROR_DEG / 4, reach=2)
    kept, check = drop_loop_breaking_pairs(pairs)
    assert check.dropped == [] and kept == pairs
    # A chain of two pairs closes no loop: however wrong, nothing contradicts them.
    chain = [p for p in pairs if (p.index1, p.index2) in {(0, 1), (1, 2)}]
    chain[0] = with_rotation(chain[0], Rotation.from_rotvec([0, np.pi, 0]) * Rotation.from_quat(chain[0].rotation_xyzw))
    assert drop_loop_breaking_pairs(chain)[0] == chain


def test_one_broken_loop_alone_drops_nothing():
    # Three photos, one loop, one pair wrong: nothing says which.
    _, pairs = ring_pairs(3, reach=1)
    pairs[0] = with_rotation(pairs[0], Rotation.from_rotvec([0, 0.6, 0]) * Rotation.from_quat(pairs[0].rotation_xyzw))
    kept, check = drop_loop_breaking_pairs(pairs)
    assert (check.loops, check.closed) == (1, 0) and check.dropped == [] and kept == pairs


def test_pairs_too_poor_to_judge_are_all_kept():
    # Four photos whose pairs are all 20-40 degrees off, each its own way: every loop breaks,
    # and dropping the pairs would cut off the whole group.
    _, pairs = ring_pairs(4, reach=3)
    rng = np.random.default_rng(1)

    def wrong() -> Rotation:
        axis = rng.normal(size=3)
        return Rotation.from_rotvec(np.radians(rng.uniform(20, 40)) * axis / np.linalg.norm(axis))

    pairs = [with_rotation(p, wrong() * Rotation.from_quat(p.rotation_xyzw)) for p in pairs]
    assert drop_loop_breaking_pairs(pairs)[1].dropped  # alone, it would drop them
    kept, check, cut_off = check_loops(4, pairs)
    assert kept == pairs and check.too_poor_to_judge and check.dropped == [] and cut_off == set()
