"""The model's self-grading (sfm_core/verdict.py) on reconstructions built in memory with exact
geometry: a well-posed model is ok; a degenerate baseline, undetermined images, absurd focal
lengths or photos left out make it suspect, each with its reason."""
import numpy as np
import pycolmap
import pytest

from sfm_core.verdict import VerdictRules, grade_model

WIDTH, HEIGHT = 800, 600


def look_at(centre: np.ndarray, target: np.ndarray) -> pycolmap.Rigid3d:
    """cam_from_world of a camera at `centre` looking at `target`, z up in the world."""
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(forward, right), forward])  # rows: camera x, y, z in world
    return pycolmap.Rigid3d(pycolmap.Rotation3d(R), -R @ centre)


def scene_model(centres, points, focal=1600.0, keep=None) -> pycolmap.Reconstruction:
    """A registered model: one PINHOLE camera of `focal` px, an image at each of `centres` (C, 3)
    looking at the origin, each of `points` (P, 3) observed at its exact projection (COLMAP
    pixels) wherever it falls inside an image. keep[c]: optional (P,) mask of the points image c
    may observe."""
    rec = pycolmap.Reconstruction()
    camera = pycolmap.Camera(model="PINHOLE", width=WIDTH, height=HEIGHT,
                             params=[focal, focal, WIDTH / 2, HEIGHT / 2], camera_id=1)
    rec.add_camera_with_trivial_rig(camera)
    tracks = [[] for _ in points]
    for c, centre in enumerate(np.asarray(centres, np.float64)):
        pose = look_at(centre, np.zeros(3))
        cam = (pose.rotation.matrix() @ points.T).T + pose.translation
        xy = np.asarray(camera.img_from_cam(cam))
        seen = (cam[:, 2] > 0) & np.all((xy > 0) & (xy < [WIDTH, HEIGHT]), axis=1)
        if keep is not None and keep[c] is not None:
            seen &= keep[c]
        index = np.flatnonzero(seen)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{c:02d}.jpg", keypoints=xy[index], camera_id=1,
                                                        image_id=c + 1))
        rec.frame(c + 1).set_cam_from_world(1, pose)
        rec.register_frame(c + 1)
        for k, p in enumerate(index):
            tracks[p].append(pycolmap.TrackElement(c + 1, k))
    for xyz, elements in zip(points, tracks):
        if len(elements) >= 2:
            rec.add_point3D(xyz, pycolmap.Track(elements))
    return rec


def arc(n: int, radius: float, span_deg: float) -> np.ndarray:
    """(n, 3) camera centres on an arc of `span_deg` degrees, `radius` from the origin, 1 m up."""
    angles = np.radians(np.linspace(-span_deg / 2, span_deg / 2, n))
    return np.stack([radius * np.cos(angles), radius * np.sin(angles), np.ones(n)], axis=1)


def cube_points(n: int = 500, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, (n, 3))


def test_well_posed_model_is_ok():
    rec = scene_model(arc(12, 10.0, 90), cube_points())
    verdict = grade_model(rec, photos=12)
    assert verdict.status == "ok", verdict.reasons
    assert verdict.reasons == [] and verdict.undetermined == [] and verdict.registered == 12
    # Neighbouring cameras 8 deg apart around points about 10 m away: several degrees of parallax.
    assert verdict.median_triangulation_angle_deg > 5
    assert verdict.mean_track_length > 5
    assert all(g.determined and g.why is None and g.coverage > 0.5 for g in verdict.images)


def test_triangulation_angles_are_the_angles_at_the_points():
    # Two cameras 2 m apart, 1 m from the points' plane: each point sees them at a known angle.
    points = np.array([[x, y, 0.0] for x in np.linspace(-0.3, 0.3, 7) for y in np.linspace(-0.2, 0.2, 5)])
    centres = np.array([[-1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    rec = pycolmap.Reconstruction()
    camera = pycolmap.Camera(model="PINHOLE", width=WIDTH, height=HEIGHT, params=[300, 300, 400, 300], camera_id=1)
    rec.add_camera_with_trivial_rig(camera)
    R = np.diag([1.0, -1.0, -1.0])  # looking straight down
    for c, centre in enumerate(centres):
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(R), -R @ centre)
        xy = np.asarray(camera.img_from_cam((R @ points.T).T + pose.translation))
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{c}.jpg", keypoints=xy, camera_id=1, image_id=c + 1))
        rec.frame(c + 1).set_cam_from_world(1, pose)
        rec.register_frame(c + 1)
    for k, xyz in enumerate(points):
        rec.add_point3D(xyz, pycolmap.Track([pycolmap.TrackElement(1, k), pycolmap.TrackElement(2, k)]))
    a, b = centres[0] - points, centres[1] - points
    expected = np.degrees(np.arccos(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
    verdict = grade_model(rec)
    assert verdict.median_triangulation_angle_deg == pytest.approx(np.median(expected), abs=1e-3)
    assert [g.median_triangulation_angle_deg for g in verdict.images] == pytest.approx([np.median(expected)] * 2,
                                                                                       abs=1e-3)
    assert verdict.mean_track_length == 2.0


def test_degenerate_baseline_is_suspect():
    # The twelve cameras within 9 cm of each other, 10 m from the points: rays nearly parallel.
    rec = scene_model(arc(12, 10.0, 0.5), cube_points())
    verdict = grade_model(rec, photos=12)
    assert verdict.status == "suspect"
    assert verdict.median_triangulation_angle_deg < 0.5
    assert any("median triangulation angle" in r and "near-degenerate" in r for r in verdict.reasons)
    assert all(not g.determined and "median triangulation angle" in g.why for g in verdict.images)


def test_undetermined_images_are_named_and_not_counted_as_registered():
    points = cube_points(600)
    rng = np.random.default_rng(1)
    keep = [None] * 12
    keep[3] = rng.random(len(points)) < 0.02  # about a dozen observations
    keep[7] = (points[:, 2] > 1.6) & (points[:, 1] > 1.0)  # all in one corner of the image
    keep[9] = keep[7]
    rec = scene_model(arc(12, 10.0, 90), points, keep=keep)
    verdict = grade_model(rec, photos=12)
    assert verdict.status == "suspect"
    assert verdict.undetermined == ["03.jpg", "07.jpg", "09.jpg"]
    assert verdict.registered == 9
    grades = {g.name: g for g in verdict.images}
    assert "observations <" in grades["03.jpg"].why
    assert "cover" in grades["07.jpg"].why and grades["07.jpg"].coverage < 0.25
    assert any(r.startswith("3 of 12 registered images have undetermined poses (03.jpg, 07.jpg, 09.jpg)")
               for r in verdict.reasons)
    # Undetermined photos count as left out of the model too.
    assert any(r.startswith("3 of 12 photos left out of the model or undetermined") for r in verdict.reasons)


def test_absurd_focal_length_is_suspect():
    rec = scene_model(arc(12, 10.0, 90), cube_points())
    camera = rec.camera(1)
    camera.params = [400 * WIDTH, 400 * WIDTH, WIDTH / 2, HEIGHT / 2]  # as the internet collection ended
    verdict = grade_model(rec, photos=12)
    assert verdict.status == "suspect"
    assert any(r.startswith("camera 1: focal 320000 px is 400x its long side") for r in verdict.reasons)
    assert all("focal 400x the long side" in g.why for g in verdict.images)


def test_photos_left_out_make_the_model_suspect():
    rec = scene_model(arc(12, 10.0, 90), cube_points())
    assert grade_model(rec, photos=13).status == "ok"  # one in 13 left out is tolerated
    verdict = grade_model(rec, photos=20)
    assert verdict.status == "suspect"
    assert verdict.reasons == ["8 of 20 photos left out of the model or undetermined in it"]
    assert grade_model(rec, photos=20, rules=VerdictRules(max_left_out_share=0.5)).status == "ok"


def test_short_tracks_are_suspect():
    points = cube_points(900)
    # Every point observed by two neighbouring cameras only.
    keep = [np.isin(np.arange(len(points)) % 12, [c, (c - 1) % 12]) for c in range(12)]
    rec = scene_model(arc(12, 10.0, 90), points, keep=keep)
    verdict = grade_model(rec, photos=12)
    assert verdict.mean_track_length == pytest.approx(2.0)
    assert any(r.startswith("mean track length 2.00 <") for r in verdict.reasons)


def test_empty_model_is_suspect():
    verdict = grade_model(pycolmap.Reconstruction(), photos=5)
    assert verdict.status == "suspect" and "no registered image" in verdict.reasons


def test_a_group_joined_by_a_few_points_is_undetermined():
    # Cameras 0-7 and 8-11 see different points but for a bridge of 10 points seen by all: the
    # two groups' relative pose rests on those 10 (fewer than a verified pair's 15 inliers).
    points = cube_points(1200)
    bridge = np.arange(len(points)) < 10
    first = bridge | (np.arange(len(points)) % 2 == 0)
    second = bridge | (np.arange(len(points)) % 2 == 1)
    rec = scene_model(arc(12, 10.0, 90), points, keep=[first] * 8 + [second] * 4)
    verdict = grade_model(rec, photos=12)
    assert verdict.undetermined == ["08.jpg", "09.jpg", "10.jpg", "11.jpg"]
    why = {g.name: g.why for g in verdict.images}["10.jpg"]
    assert why == "in a group of 4 image(s) sharing fewer than 15 points with any image of the model's main group of 8"
    assert verdict.status == "suspect"
    # With a bridge of 40 points the groups are one.
    bridge = np.arange(len(points)) < 40
    keep = [bridge | (np.arange(len(points)) % 2 == 0)] * 8 + [bridge | (np.arange(len(points)) % 2 == 1)] * 4
    assert grade_model(scene_model(arc(12, 10.0, 90), points, keep=keep), photos=12).status == "ok"


def test_focal_lengths_far_from_their_exif_are_suspect():
    rec = scene_model(arc(12, 10.0, 90), cube_points())  # every camera at 1600 px
    names = [image.name for image in rec.images.values()]
    # EXIF within 5 % of the adjusted focal length, or wrong on a few photos: ok.
    assert grade_model(rec, 12, exif_focals={name: 1600.0 * 1.05 for name in names}).status == "ok"
    assert grade_model(rec, 12, exif_focals={name: 1600.0 * (0.7 if k < 4 else 1.0)
                                             for k, name in enumerate(names)}).status == "ok"
    # EXIF 0.7 of the adjusted focal length on half of them, as cropped photos read: suspect.
    verdict = grade_model(rec, 12, exif_focals={name: 1600.0 * (0.7 if k < 6 else 1.0)
                                                for k, name in enumerate(names)})
    assert verdict.status == "suspect"
    assert verdict.reasons == ["the adjusted focal lengths of 6 of 12 photos with an EXIF focal length left it by "
                               "more than 10% (median x1.21): their EXIF is wrong, as for photos cropped or resized "
                               "after the shot, and their principal points may be off too"]
    # The share is of the model's photos: one wrong EXIF among photos without any is tolerated.
    assert grade_model(rec, 12, exif_focals={names[0]: 800.0}).status == "ok"


def true_pair_matches(rec: pycolmap.Reconstruction):
    """Every pair of images of `rec` with the points both observe, as verified pairs' inliers."""
    from sfm_core.pair_contradictions import PairMatches

    seen = {image_id: {} for image_id in rec.images}
    for point_id, point in rec.points3D.items():
        for element in point.track.elements:
            seen[element.image_id][point_id] = rec.image(element.image_id).points2D[element.point2D_idx].xy
    pairs = []
    ids = sorted(rec.images)
    for k, first in enumerate(ids):
        for second in ids[k + 1:]:
            common = sorted(set(seen[first]) & set(seen[second]))
            pairs.append(PairMatches(rec.image(first).name, rec.image(second).name,
                                     np.array([seen[first][p] for p in common]),
                                     np.array([seen[second][p] for p in common])))
    return pairs


def test_verified_pairs_that_the_model_contradicts_make_it_suspect():
    rec = scene_model(arc(12, 10.0, 90), cube_points())
    pairs = true_pair_matches(rec)
    assert grade_model(rec, photos=12, pairs=pairs).status == "ok"
    # Fold it: the last six cameras turned half a turn about the vertical through the scene, as
    # the photos of one side of a symmetric building posed on the other. Each half stays
    # consistent; the true pairs across the fold do not fit.
    half_turn = pycolmap.Rigid3d(pycolmap.Rotation3d(np.diag([-1.0, -1.0, 1.0])), np.zeros(3))
    for image_id in range(7, 13):
        rec.frame(image_id).set_cam_from_world(1, rec.image(image_id).cam_from_world() * half_turn)
    across = [p for p in pairs if (int(p.name1[:2]) < 6) != (int(p.name2[:2]) < 6) and len(p.xy1) >= 30]
    verdict = grade_model(rec, photos=12, pairs=pairs)
    assert verdict.status == "suspect"
    [reason] = [r for r in verdict.reasons if "contradict its poses" in r]
    assert reason.startswith(f"{len(across)} of ") and len(across) >= 10
    # Fewer contradicted pairs than min_contradicted_pairs are tolerated.
    rules = VerdictRules(min_contradicted_pairs=len(across) + 1)
    assert not [r for r in grade_model(rec, photos=12, pairs=pairs, rules=rules).reasons if "contradict" in r]


def test_pairs_of_an_undetermined_photo_are_not_counted_as_contradictions():
    """A photo posed without points (so undetermined) whose position is off contradicts every
    pair it has: the rule on undetermined photos speaks for it, not the rule on pairs."""
    points = cube_points()
    pairs = true_pair_matches(scene_model(arc(12, 10.0, 90), points))
    sideways = pycolmap.Rigid3d(pycolmap.Rotation3d(), np.array([3.0, 0.0, 0.0]))

    def with_photo_5_off(observed: bool) -> pycolmap.Reconstruction:
        keep = [None] * 12
        keep[5] = None if observed else np.zeros(len(points), bool)
        rec = scene_model(arc(12, 10.0, 90), points, keep=keep)
        rec.frame(6).set_cam_from_world(1, rec.image(6).cam_from_world() * sideways)
        return rec

    verdict = grade_model(with_photo_5_off(observed=False), photos=12, pairs=pairs)
    assert verdict.undetermined == ["05.jpg"] and verdict.status == "ok", verdict.reasons
    # The same pose, with its points, is claimed as determined: its pairs count against the model.
    verdict = grade_model(with_photo_5_off(observed=True), photos=12, pairs=pairs)
    assert any("contradict its poses" in reason for reason in verdict.reasons), verdict.reasons
