"""Folds: a model whose two sides were posed onto one, found by the structure they lay twice.

When the photos of the far side of a symmetric building are posed on the near side (its walls
look alike, and pairs of them verify), what does not look alike (the ground in front, the
roof) is triangulated twice in the same place: once from each side's photos, and no photo
sees both. In a right model, points close together are seen by photos that also see each
other's points: tracks are short, but photos that see a place from one direction share points
there.

The points are cut into cells. In each cell, the photos that see its points are joined when
they share a point there; where a cell's photos fall into two or more such groups, photos of
different groups that look the same way vote against being on one side, and photos of one
group vote for it. The photos are then cut in two twice: along the votes against alone (the
largest cut), and along both (the for votes weigh half). A side's points laid over the other's
are its own points (seen by none of the other side's photos) with at least MIN_OTHER_SIDE_SHARE
of their nearest points the other side's own points and none seen by both sides. The model is
folded when both cuts leave at least MIN_FOLD_SHARE of each side's own points laid over the
other's. It is split along the second cut of the photos that the votes tie together; a photo
with too few votes to either side (one that sees only walls) is on neither.

Measured (docs/benchmarks.md): folded models of 75-87 photos 0.35-0.58; every other model
measured (synthetic sets, shared photo sets, kitchen) at most 0.08, a right 78-photo chunk of
the 1000-photo collection 0.17; a folded 40-photo model 0.26, under the threshold.

Pure: the reconstruction is only read (split_model builds new ones).
"""
from dataclasses import dataclass

import numpy as np
import pycolmap
import scipy.sparse
import scipy.sparse.csgraph
from scipy.spatial import cKDTree

CELLS_ACROSS = 25  # cells along the longest side of the points' extent (5th-95th percentile)
MIN_CELL_POINTS = 30  # a cell with fewer points casts no vote
MIN_GROUP_POINTS = 10  # a group of photos in a cell counts when it sees this many of its points
MAX_VIEW_ANGLE_DEG = 30.0  # photos of two groups vote against each other when they look this alike
FOR_WEIGHT = 0.5  # weight of a vote for one side against a vote against, in the cut to split along
NEIGHBOURS = 10  # the nearest points read around each point
MIN_OTHER_SIDE_SHARE = 0.3  # a point is laid over others when this share of its neighbours is the other side's
MIN_SIDE_POINTS = 50  # each side needs this many points of its own to be scored
MIN_FOLD_SHARE = 0.3  # folded when both cuts lay this share of each side's own points over the other's
# The split keeps the photos tied by this many votes (weighted) into one group: with every photo
# that has a vote, 4-10 of 80 landed on the wrong side of the folds measured; with 5, none on
# four of five folds.
MIN_LINK_VOTES = 5.0


@dataclass(frozen=True)
class Superimposition:
    share: float  # the smaller share of the two cuts (see the module); 0 when not scored
    sides: tuple[list[str], list[str]]  # a fold's photos of each side, by name (the smaller first); else empty
    undecided: list[str]  # a fold's photos whose side the votes do not tell (see _split_sides)

    @property
    def folded(self) -> bool:
        return self.share >= MIN_FOLD_SHARE


def superimposition(rec: pycolmap.Reconstruction) -> Superimposition:
    """How much of the model's structure is laid twice over the same place (see the module)."""
    image_ids = sorted(rec.reg_image_ids())
    if len(image_ids) < 4 or rec.num_points3D() < 2 * MIN_SIDE_POINTS:
        return Superimposition(0.0, ([], []), [])
    column = {image_id: k for k, image_id in enumerate(image_ids)}
    xyz, rows, cols = [], [], []
    for row, point in enumerate(rec.points3D.values()):
        xyz.append(point.xyz)
        for image_id in {e.image_id for e in point.track.elements}:
            rows.append(row)
            cols.append(column[image_id])
    xyz = np.asarray(xyz)
    seen = scipy.sparse.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(len(xyz), len(image_ids)))
    against, together = _votes(xyz, seen, np.array([rec.image(i).viewing_direction() for i in image_ids]))
    if not against.any():
        return Superimposition(0.0, ([], []), [])
    _, neighbours = cKDTree(xyz).query(xyz, NEIGHBOURS + 1)
    neighbours = neighbours[:, 1:]
    weights = FOR_WEIGHT * together - against
    share = min(_laid_over_share(seen, neighbours, _cut(-against)),
                _laid_over_share(seen, neighbours, _cut(weights)))
    if share < MIN_FOLD_SHARE:
        return Superimposition(share, ([], []), [])
    first, second = _split_sides(weights)
    names = lambda members: sorted(rec.image(image_ids[k]).name for k in np.nonzero(members)[0])  # noqa: E731
    sides = sorted((names(first), names(second)), key=len)
    return Superimposition(share, (sides[0], sides[1]), names(~(first | second)))


def split_model(rec: pycolmap.Reconstruction, sides: tuple[list[str], list[str]]) -> list[pycolmap.Reconstruction]:
    """A model of each side's photos (by name; photos of neither side are in neither): poses and
    cameras as in `rec`; each point keeps its observations from that model's photos, and is
    dropped where fewer than two remain."""
    pieces = []
    for side in map(set, sides):
        piece = pycolmap.Reconstruction()
        for camera in rec.cameras.values():
            piece.add_camera_with_trivial_rig(camera)
        kept = set()
        for image_id in sorted(rec.reg_image_ids()):
            image = rec.image(image_id)
            if image.name in side:
                copy = pycolmap.Image(name=image.name, camera_id=image.camera_id, image_id=image_id,
                                      keypoints=np.array([p.xy for p in image.points2D], np.float64).reshape(-1, 2))
                piece.add_image_with_trivial_frame(copy, image.cam_from_world())
                kept.add(image_id)
        for point in rec.points3D.values():
            elements = [e for e in point.track.elements if e.image_id in kept]
            if len({e.image_id for e in elements}) >= 2:
                piece.add_point3D(point.xyz, pycolmap.Track(elements), point.color)
        piece.update_point_3d_errors()
        pieces.append(piece)
    return pieces


def _votes(xyz: np.ndarray, seen: scipy.sparse.csr_matrix, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(against, for): (C, C) counts of the cells where two photos fall into different groups
    while looking within MAX_VIEW_ANGLE_DEG of each other, and where they fall into one group
    of a cell holding two or more."""
    num_photos = seen.shape[1]
    low, high = np.percentile(xyz, 5, axis=0), np.percentile(xyz, 95, axis=0)
    size = max(float(np.max(high - low)), 1e-12) / CELLS_ACROSS
    _, cell_of_point = np.unique(np.floor(xyz / size).astype(np.int64), axis=0, return_inverse=True)
    cell_of_point = cell_of_point.ravel()
    order = np.argsort(cell_of_point, kind="stable")
    starts = np.r_[0, np.nonzero(np.diff(cell_of_point[order]))[0] + 1, len(order)]
    min_cos = np.cos(np.radians(MAX_VIEW_ANGLE_DEG))
    against = np.zeros((num_photos, num_photos))
    together = np.zeros((num_photos, num_photos))
    for begin, end in zip(starts[:-1], starts[1:]):
        if end - begin < MIN_CELL_POINTS:
            continue
        in_cell = seen[order[begin:end]]
        photos = np.nonzero(np.asarray(in_cell.sum(axis=0)).ravel())[0]
        observed = in_cell[:, photos]
        # Groups: photos joined by the points they share in the cell.
        _, group = scipy.sparse.csgraph.connected_components((observed.T @ observed).astype(bool), directed=False)
        points_per_group = np.bincount(group[np.asarray(observed.argmax(axis=1)).ravel()], minlength=group.max() + 1)
        groups = [photos[group == g] for g in np.nonzero(points_per_group >= MIN_GROUP_POINTS)[0]]
        if len(groups) < 2:
            continue
        for members in groups:
            together[np.ix_(members, members)] += 1
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                first, second = np.nonzero(directions[groups[a]] @ directions[groups[b]].T > min_cos)
                np.add.at(against, (groups[a][first], groups[b][second]), 1)
                np.add.at(against, (groups[b][second], groups[a][first]), 1)
    np.fill_diagonal(together, 0)
    return against, together


def _split_sides(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two sides to split along, (C,) bool each: the cut of the photos joined to one another
    by at least MIN_LINK_VOTES votes (the largest such group); a photo outside it has too few
    votes tying it to either side (it sees walls only, or its own corner), and is on neither."""
    linked = scipy.sparse.csr_matrix(np.abs(weights) >= MIN_LINK_VOTES)
    _, group = scipy.sparse.csgraph.connected_components(linked, directed=False)
    members = np.nonzero(group == np.bincount(group).argmax())[0]
    first = np.zeros(len(weights), bool)
    first[members] = _cut(weights[np.ix_(members, members)])
    second = np.zeros(len(weights), bool)
    second[members] = ~first[members]
    return first, second


def _cut(weights: np.ndarray) -> np.ndarray:
    """A two-way cut of the photos keeping as much of `weights` (C, C) within the sides as a
    spectral start and single flips find: (C,) bool. Negative weights are pushed across."""
    side = np.linalg.eigh(weights)[1][:, -1] > 0
    for _ in range(4 * len(side)):
        same = side[:, None] == side[None, :]
        gain = np.where(same, -weights, weights).sum(axis=1)  # what flipping each photo adds
        best = int(np.argmax(gain))
        if gain[best] <= 0:
            break
        side[best] = ~side[best]
    return side


def _laid_over_share(seen: scipy.sparse.csr_matrix, neighbours: np.ndarray, side: np.ndarray) -> float:
    """The smaller of the two sides' shares of own points laid over the other side's."""
    on_first = np.asarray(seen @ side.astype(np.int64)).ravel() > 0
    on_second = np.asarray(seen @ (~side).astype(np.int64)).ravel() > 0
    label = np.where(on_first & on_second, 0, np.where(on_first, 1, 2))
    shares = []
    for own, other in ((1, 2), (2, 1)):
        mine = label == own
        if mine.sum() < MIN_SIDE_POINTS:
            return 0.0
        around = label[neighbours[mine]]
        laid_over = ((around == other).mean(axis=1) >= MIN_OTHER_SIDE_SHARE) & ~(around == 0).any(axis=1)
        shares.append(float(laid_over.mean()))
    return min(shares)
