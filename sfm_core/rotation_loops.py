"""Relative rotations checked around the view graph's loops before rotation averaging.

Three photos that are pairwise verified close a loop: going a -> b -> c -> a with the pairs'
relative rotations must come back to where it started. A wrong relative rotation (a
doppelganger pair: a repeated facade, the far side of a symmetric building; or a pair posed
with a wrong focal length) breaks every loop it closes, while a right one breaks only the
loops it shares with a wrong one. A pair is dropped while it breaks more loops than it
closes, and at least two, the worst first (a dropped pair's loops no longer count against
the others); so is a pair that broke at least two loops and closed none. Pairs in no loop are
kept (nothing contradicts them), and so are those of a single broken loop (which of its three
pairs is wrong is not known).
"""
from dataclasses import dataclass, replace

from scipy.spatial.transform import Rotation

from sfm_core.evaluation import rotation_angle_deg
from sfm_core.initialization import pose_graph_components
from sfm_core.verification import VerifiedPair

# A loop closes when its rotations compose to within this angle of the identity. It composes
# three relative rotations, each estimated before any focal length is adjusted: at 5 degrees,
# british_museum lost a pair that broke 8 loops and closed none, and its AUC@5 fell 0.58 ->
# 0.48; at 10 it keeps it. A doppelganger pair is off by tens of degrees.
MAX_LOOP_ERROR_DEG = 10.0


@dataclass(frozen=True)
class BrokenPair:
    """A pair dropped for breaking the loops it closes."""
    index1: int
    index2: int
    loops_broken: int
    loops_closed: int


@dataclass(frozen=True)
class LoopCheck:
    loops: int  # loops of three pairs with relative poses
    closed: int  # of them, those that close within the bound
    dropped: list[BrokenPair]
    too_poor_to_judge: bool = False  # check_loops kept every pair: see there


def drop_loop_breaking_pairs(pairs: list[VerifiedPair], max_loop_error_deg: float = MAX_LOOP_ERROR_DEG
                             ) -> tuple[list[VerifiedPair], LoopCheck]:
    """(pairs kept, the check). Pairs with a relative pose (rotation_xyzw: cam2_from_cam1,
    scalar last) take part; the others are kept as they are."""
    posed = {_key(p): p for p in pairs if p.rotation_xyzw is not None}
    rotation = {}
    for (a, b), pair in posed.items():
        matrix = Rotation.from_quat(pair.rotation_xyzw).as_matrix()  # cam(index2)_from_cam(index1)
        rotation[a, b] = matrix if pair.index1 == a else matrix.T  # cam(b)_from_cam(a), a < b
    neighbours: dict[int, set[int]] = {}
    for a, b in rotation:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)

    # Every loop a < b < c, with whether it closes.
    loops = {}
    for a, b in rotation:
        for c in neighbours[a] & neighbours[b]:
            if c > b:
                around = rotation[a, c].T @ rotation[b, c] @ rotation[a, b]  # a -> b -> c -> a
                loops[a, b, c] = rotation_angle_deg(around) <= max_loop_error_deg
    counted = len(loops), sum(loops.values())
    closed = {edge: 0 for edge in rotation}
    broken = {edge: 0 for edge in rotation}
    loops_of: dict[tuple[int, int], list[tuple[int, int, int]]] = {edge: [] for edge in rotation}
    for (a, b, c), closes in loops.items():
        for edge in ((a, b), (b, c), (a, c)):
            (closed if closes else broken)[edge] += 1
            loops_of[edge].append((a, b, c))

    first_closed, first_broken = dict(closed), dict(broken)
    dropped = []
    while True:
        worst = max(rotation, key=lambda e: (broken[e] - closed[e], broken[e], -len(posed[e].inliers)), default=None)
        # One broken loop alone cannot say which of its three pairs is wrong.
        if worst is None or broken[worst] <= closed[worst] or broken[worst] < 2:
            break
        dropped.append(BrokenPair(*worst, broken[worst], closed[worst]))
        for loop in loops_of[worst]:
            if loop not in loops:
                continue  # gone with an edge dropped before
            closes = loops.pop(loop)
            a, b, c = loop
            for edge in ((a, b), (b, c), (a, c)):
                (closed if closes else broken)[edge] -= 1
        del rotation[worst]
    # A wrong pair whose loops all went with pairs dropped before it closes none now, but
    # closed none to start with: it goes too.
    for edge in list(rotation):
        if first_closed[edge] == 0 and first_broken[edge] >= 2:
            dropped.append(BrokenPair(*edge, first_broken[edge], 0))
            del rotation[edge]
    gone = {(d.index1, d.index2) for d in dropped}
    return [p for p in pairs if _key(p) not in gone], LoopCheck(*counted, dropped)


def check_loops(num_frames: int, pairs: list[VerifiedPair]) -> tuple[list[VerifiedPair], LoopCheck, set[int]]:
    """(pairs kept, the check, frames cut off): drop_loop_breaking_pairs, and the frames of the
    largest group the pairs link that the kept pairs no longer link to its largest part (posed
    by contradictions only). Where that would cut off half the group or more, the relative
    rotations are too poor to judge (4 photos of 320x240 with pairs 6-80 degrees off in a test
    scene, which the adjustment then fixes): every pair is kept, and the check says so."""
    kept, check = drop_loop_breaking_pairs(pairs)
    if not check.dropped:
        return pairs, check, set()
    before, after = _largest_group(num_frames, pairs), _largest_group(num_frames, kept)
    cut_off = before - after
    if 2 * len(cut_off) >= len(before):
        return pairs, replace(check, dropped=[], too_poor_to_judge=True), set()
    return kept, check, cut_off


def _largest_group(num_frames: int, pairs: list[VerifiedPair]) -> set[int]:
    components = pose_graph_components(num_frames, pairs)
    return set(components[0]) if components else set()


def _key(pair: VerifiedPair) -> tuple[int, int]:
    return min(pair.index1, pair.index2), max(pair.index1, pair.index2)
