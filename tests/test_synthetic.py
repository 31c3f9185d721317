import numpy as np
import pycolmap
import pytest
from PIL import Image
from scipy import ndimage

from sfm_core.synthetic import render_scene
from storage.synthetic_io import load_package_textures, write_scene

SMALL = (160, 120)


@pytest.fixture(scope="module")
def scene():
    return render_scene(load_package_textures(), n_cameras=30, image_size=SMALL, seed=0)


def wave_texture():
    """Smooth but fast-varying: rendered colour pins down sub-pixel position."""
    y, x = np.mgrid[0:256, 0:256]
    return np.stack([128 + 100 * np.sin(2 * np.pi * x / 41),
                     128 + 100 * np.sin(2 * np.pi * y / 37),
                     np.full(x.shape, 128.0)], -1).round().astype(np.uint8)


def project(intrinsics, pose, points):
    """Independent PINHOLE projection: image points (N, 2) and depths (N,)."""
    fx, fy, cx, cy, _, _ = intrinsics
    R, t = pose
    cam = points @ R.T + t
    return np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], 1), cam[:, 2]


def centre_of(pose):
    R, t = pose
    return -R.T @ t


def visible(landmark, centre, points, faces):
    """Whether each point on ``faces`` is the first surface hit from ``centre``."""
    t, hit = landmark.trace(centre, points - centre)
    return (hit == faces) & (t > 1 - 1e-3)


def sample(img, xy):
    """Bilinear colour at image points, pixel (i, j) centred at (j + .5, i + .5)."""
    coords = [xy[:, 1] - 0.5, xy[:, 0] - 0.5]
    return np.stack([ndimage.map_coordinates(img[..., c].astype(float), coords, order=1)
                     for c in range(3)], 1)


def test_package_textures_are_rgb_photos():
    textures = load_package_textures()
    assert len(textures) >= 8
    for tex in textures:
        assert tex.dtype == np.uint8 and tex.ndim == 3 and tex.shape[2] == 3
        assert min(tex.shape[:2]) >= 128 and tex.std() > 20


def test_faces_are_on_boxes_and_textures_read_upright(scene):
    lm = scene.landmark
    lo, hi = lm.bounds()
    for face in lm.faces[:-1]:
        corners = face.corners()
        assert np.all(corners >= lo - 1e-9) and np.all(corners <= hi + 1e-9)
        # Viewed from outside, u goes right and v goes down: u x v points into the face.
        into = np.cross(face.u_axis, face.v_axis)
        assert np.allclose(into / np.linalg.norm(into), -face.normal)
    assert lm.faces[-1].name == "ground" and lm.faces[-1].normal[2] == 1


def test_render_agrees_with_pinhole_projection():
    sc = render_scene([wave_texture()], n_cameras=6, image_size=(320, 240), seed=3)
    rng = np.random.default_rng(0)
    # Big facades keep the wave several pixels long in the image, where image
    # interpolation is accurate.
    main_faces = [k for k, f in enumerate(sc.landmark.faces) if f.name.startswith("main")]
    errors, shifted = [], []
    for img, K, pose in zip(sc.images, sc.intrinsics, sc.cam_from_world):
        faces = rng.choice(main_faces, 400)
        uv = rng.uniform(0.1, 0.9, (400, 2))
        points = np.array([sc.landmark.faces[f].point(u, v) for f, (u, v) in zip(faces, uv)])
        xy, depth = project(K, pose, points)
        c = centre_of(pose)
        rays = (points - c) / np.linalg.norm(points - c, axis=1, keepdims=True)
        normals = np.array([sc.landmark.faces[f].normal for f in faces])
        keep = ((depth > 0) & np.all((xy > 2) & (xy < np.array(K[4:]) - 2), 1)
                & (np.sum(-rays * normals, 1) > 0.5) & visible(sc.landmark, c, points, faces))
        expected = np.array([sample(sc.landmark.faces[f].texture,
                                    np.array([[u * sc.landmark.faces[f].texture.shape[1],
                                               v * sc.landmark.faces[f].texture.shape[0]]]))[0]
                             for f, (u, v) in zip(faces[keep], uv[keep])])
        errors.append(np.abs(sample(img, xy[keep]) - expected)[:, :2].ravel())
        # The classic half-pixel convention slip, to show the check is sensitive.
        shifted.append(np.abs(sample(img, xy[keep] - 0.5) - expected)[:, :2].ravel())
    errors, shifted = np.concatenate(errors), np.concatenate(shifted)
    assert errors.size > 500
    assert np.median(errors) < 2 and np.percentile(errors, 90) < 6
    assert np.median(shifted) > 4 * np.median(errors)


def test_deterministic_for_seed():
    textures = [wave_texture()]
    a = render_scene(textures, n_cameras=3, image_size=(64, 48), seed=7)
    b = render_scene(textures, n_cameras=3, image_size=(64, 48), seed=7)
    c = render_scene(textures, n_cameras=3, image_size=(64, 48), seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
               for x, y in zip(a.cam_from_world, b.cam_from_world))
    assert not np.allclose(a.cam_from_world[0][1], c.cam_from_world[0][1])


def test_images_are_textured(scene):
    assert len(scene.images) == 30 and len(set(scene.names)) == 30
    for img, K, pose in zip(scene.images, scene.intrinsics, scene.cam_from_world):
        assert img.shape == (SMALL[1], SMALL[0], 3) and img.dtype == np.uint8
        gray = img.astype(float).mean(-1)
        local_std = np.sqrt(np.maximum(ndimage.uniform_filter(gray ** 2, 5)
                                       - ndimage.uniform_filter(gray, 5) ** 2, 0))
        # Sky is allowed to be smooth; everything the rays hit must be textured.
        fx, fy, cx, cy, w, h = K
        i, j = np.mgrid[0:h, 0:w]
        dirs = np.stack([(j + 0.5 - cx) / fx, (i + 0.5 - cy) / fy, np.ones(i.shape)], -1) @ pose[0]
        _, hit = scene.landmark.trace(centre_of(pose), dirs.reshape(-1, 3))
        surface = hit.reshape(h, w) >= 0
        assert surface.mean() > 0.4
        assert np.mean(local_std[surface] < 3) < 0.1


def test_neighbouring_cameras_overlap(scene):
    lm, n = scene.landmark, len(scene.images)
    b = lm.building
    for K, pose in zip(scene.intrinsics, scene.cam_from_world):
        xy, depth = project(K, pose, ((b.lo + b.hi) / 2)[None])
        w, h = K[4:]
        assert depth[0] > 0 and 0.2 * w < xy[0, 0] < 0.8 * w and 0.2 * h < xy[0, 1] < 0.8 * h
    for k in range(n - 1):
        (fx, fy, cx, cy, w, h), pose = scene.intrinsics[k], scene.cam_from_world[k]
        i, j = np.mgrid[4:h:8, 4:w:8]
        dirs = np.stack([(j + 0.5 - cx) / fx, (i + 0.5 - cy) / fy, np.ones(i.shape)], -1) @ pose[0]
        c = centre_of(pose)
        t, faces = lm.trace(c, dirs.reshape(-1, 3))
        hit = faces >= 0
        points = c + t[hit, None] * dirs.reshape(-1, 3)[hit]
        K2, pose2 = scene.intrinsics[k + 1], scene.cam_from_world[k + 1]
        xy, depth = project(K2, pose2, points)
        in_view = (depth > 0) & np.all((xy >= 0) & (xy <= np.array(K2[4:])), 1)
        seen = in_view & visible(lm, centre_of(pose2), points, faces[hit])
        assert seen.mean() > 0.5, f"cameras {k} and {k + 1} overlap too little"


def test_written_model_round_trips(scene, tmp_path):
    write_scene(scene, tmp_path)
    rec = pycolmap.Reconstruction(tmp_path / "gt")
    assert rec.num_images() == len(scene.names) and rec.num_points3D() == 0
    images = {im.name: im for im in rec.images.values()}
    assert set(images) == set(scene.names)
    for name, K, (R, t) in zip(scene.names, scene.intrinsics, scene.cam_from_world):
        im = images[name]
        cam = rec.cameras[im.camera_id]
        assert cam.model == pycolmap.CameraModelId.PINHOLE
        assert (cam.width, cam.height) == K[4:]
        assert np.allclose(cam.params, K[:4])
        pose = im.cam_from_world()
        assert np.allclose(pose.rotation.matrix(), R, atol=1e-9)
        assert np.allclose(pose.translation, t, atol=1e-9)
        with Image.open(tmp_path / "images" / name) as jpg:
            assert jpg.format == "JPEG" and jpg.size == K[4:]


def test_collection_has_exact_cameras_exif_focals_and_distractors(tmp_path):
    from flows.cli import main
    from storage.images import probe_image

    assert main(["synth", "--n", "5", "--distractors", "2", "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    images = tmp_path / "a" / "images"
    names = sorted(p.name for p in images.iterdir())
    assert names == ["distractor_000.jpg", "distractor_001.jpg"] + [f"img_{k:03d}.jpg" for k in range(5)]
    assert (tmp_path / "a" / "distractors.txt").read_text().split() == names[:2]
    truth = pycolmap.Reconstruction(str(tmp_path / "a" / "gt"))
    assert sorted(image.name for image in truth.images.values()) == names[2:]
    for image in truth.images.values():
        camera = truth.cameras[image.camera_id]
        probe = probe_image(str(images / image.name))
        assert (probe.width, probe.height) == (camera.width, camera.height)
        # EXIF holds the 35 mm-equivalent focal in whole millimetres: within 2 % of the truth.
        assert probe.focal_length_px == pytest.approx(camera.params[0], rel=0.02)
        assert probe.camera_model == f"synthetic {camera.width}x{camera.height}"
    # Cameras all around the landmark, at different distances and zooms.
    centres = np.array([image.projection_center() for image in truth.images.values()])
    assert np.ptp(np.linalg.norm(centres[:, :2], axis=1)) > 5
    assert len({truth.cameras[i.camera_id].params[0] for i in truth.images.values()}) == 5
    # Distractors: no EXIF camera, and nothing alike.
    first, second = (np.asarray(Image.open(images / n), np.float32) for n in names[:2])
    assert probe_image(str(images / names[0])).camera_model is None
    assert first.shape != second.shape or np.abs(first - second).mean() > 30

    main(["synth", "--n", "5", "--distractors", "2", "--out", str(tmp_path / "b"), "--seed", "3"])
    assert all((images / n).read_bytes() == (tmp_path / "b" / "images" / n).read_bytes() for n in names)


def test_a_cropped_camera_sees_its_window_of_the_frame_across_the_whole_photo():
    from sfm_core.synthetic import CROP_KEPT, cropped_camera

    frame = (700.0, 700.0, 400.0, 300.0, 800, 600)
    rng = np.random.default_rng(0)
    directions = np.random.default_rng(1).normal(size=(50, 3)) + [0, 0, 4]
    for _ in range(20):
        (fx, fy, cx, cy, w, h), kept = cropped_camera(frame, rng)
        assert CROP_KEPT[0] <= kept <= CROP_KEPT[1] and (w, h) == (800, 600)
        in_frame = frame[0] * directions[:, :2] / directions[:, 2:] + frame[2:4]
        in_photo = np.array([fx, fy]) * directions[:, :2] / directions[:, 2:] + [cx, cy]
        # The photo is the window [x0, x0 + kept w] x [y0, y0 + kept h] of the frame, scaled by 1 / kept.
        corner = in_frame - in_photo * kept
        assert np.allclose(corner, corner[0])
        assert 0 <= corner[0, 0] <= (1 - kept) * w and 0 <= corner[0, 1] <= (1 - kept) * h


def test_nuisances_remove_exif_or_crop_photos_keeping_their_frames_exif(tmp_path):
    from flows.cli import main
    from flows.synth import CAMERA_MODELS
    from sfm_core.synthetic import CROP_KEPT
    from storage.images import probe_image

    assert main(["synth", "--n", "4", "--nuisances", "no-exif", "--out", str(tmp_path / "plain")]) == 0
    truth = pycolmap.Reconstruction(str(tmp_path / "plain" / "gt"))
    assert len({camera.params[0] for camera in truth.cameras.values()}) == 4  # focal lengths still vary
    for image in truth.images.values():
        probe = probe_image(str(tmp_path / "plain" / "images" / image.name))
        assert (probe.focal_length_px, probe.camera_model, probe.focal_source) == (None, None, "calibrated")

    assert main(["synth", "--n", "6", "--nuisances", "crops", "--out", str(tmp_path / "crops")]) == 0
    truth = pycolmap.Reconstruction(str(tmp_path / "crops" / "gt"))
    for image in truth.images.values():
        camera = truth.cameras[image.camera_id]
        probe = probe_image(str(tmp_path / "crops" / "images" / image.name))
        # Nothing in the file gives the crop away: the EXIF focal passes ingest's checks, and is wrong.
        assert probe.focal_source == "exif" and probe.camera_model in CAMERA_MODELS
        assert CROP_KEPT[0] - 0.02 <= probe.focal_length_px / camera.params[0] <= CROP_KEPT[1] + 0.02
        assert (camera.params[2], camera.params[3]) != (camera.width / 2, camera.height / 2)

    assert main(["synth", "--n", "2", "--nuisances", "no-exif,crops", "--out", str(tmp_path / "x")]) == 2
    assert main(["synth", "--n", "2", "--nuisances", "fog", "--out", str(tmp_path / "x")]) == 2

    # The control of camera sharing: one camera's photos, no EXIF.
    assert main(["synth", "--n", "3", "--one-camera", "--nuisances", "no-exif", "--out", str(tmp_path / "one")]) == 0
    truth = pycolmap.Reconstruction(str(tmp_path / "one" / "gt"))
    assert len({(c.width, c.height, *c.params) for c in truth.cameras.values()}) == 1
    assert next(iter(truth.cameras.values())).width == 800


def test_the_symmetric_building_looks_the_same_half_a_turn_away():
    """synth --nuisances symmetric: every wall carries its twin's texture, half a turn about the
    vertical, texel for texel; the roofs differ (and the ground), which tells the sides apart."""
    from sfm_core.synthetic import build_landmark

    half_turn = np.diag([-1.0, -1.0, 1.0])
    textures = load_package_textures()
    landmark = build_landmark(textures, symmetric=True)
    walls = [f for f in landmark.faces[:-1] if f.axis != 2]
    assert len(walls) == 4 + 2 * 3  # main's four, each annex's three outer walls
    rng = np.random.default_rng(0)
    for face in walls:
        [twin] = [f for f in walls if np.allclose(np.sort(f.corners() @ half_turn.T, 0), np.sort(face.corners(), 0))]
        assert twin is not face and np.array_equal(twin.texture, face.texture)
        uv = rng.uniform(0, 1, (20, 2))
        points = np.array([face.point(u, v) for u, v in uv]) @ half_turn.T
        np.testing.assert_allclose(np.stack(twin.uv(points), 1), uv, atol=1e-9)
    roofs = [f for f in landmark.faces[:-1] if f.axis == 2]
    assert not np.array_equal(roofs[1].texture, roofs[2].texture)
    # The usual landmark has no such twins.
    plain = {f.name: f for f in build_landmark(textures).faces}
    assert not np.array_equal(plain["main_x+"].texture, plain["main_x-"].texture)


def hfov_deg(intrinsics):
    return np.degrees(2 * np.arctan(intrinsics[4] / 2 / intrinsics[0]))


def test_zoomed_cameras_are_narrow_and_aimed_at_a_wall_of_the_building_facing_them():
    """synth --nuisances zoom: a detail of a wall, from where the photographer stood."""
    from sfm_core.synthetic import ZOOM_HFOV_DEG, build_landmark, collection_cameras, zoomed_camera

    landmark = build_landmark([wave_texture()])
    intrinsics, poses = collection_cameras(landmark, 16, seed=2)
    rng = np.random.default_rng(0)
    walls_hit, frame_on_walls = set(), []

    def is_building_wall(face_index):
        face = landmark.faces[face_index]
        return face_index >= 0 and face.name.startswith(f"{landmark.building.name}_") and face.axis != 2

    for K, pose in zip(intrinsics, poses):
        (fx, fy, cx, cy, w, h), (R, t) = zoomed_camera(landmark, K, pose, rng)
        assert (w, h) == K[4:] and fx == fy and (cx, cy) == (w / 2, h / 2)
        assert ZOOM_HFOV_DEG[0] <= hfov_deg((fx, fy, cx, cy, w, h)) <= ZOOM_HFOV_DEG[1]
        assert np.allclose(R @ R.T, np.eye(3)) and abs(R[0, 2]) < 1e-12  # zero roll: x stays horizontal
        centre = centre_of(pose)
        assert np.allclose(centre_of((R, t)), centre)
        # The optical axis first meets a wall (not the roof) of the building, from its outer side.
        _, [face] = landmark.trace(centre, R[2][None])
        assert is_building_wall(face) and landmark.faces[face].normal @ R[2] < 0
        walls_hit.add(face)
        # The detail fills the frame: rays across it meet the building's walls.
        i, j = np.mgrid[0:h:h // 6, 0:w:w // 6] + 0.5
        dirs = np.stack([(j - cx) / fx, (i - cy) / fy, np.ones(i.shape)], -1).reshape(-1, 3) @ R
        _, faces = landmark.trace(centre, dirs)
        frame_on_walls.append(np.mean([is_building_wall(k) for k in faces]))
    assert len(walls_hit) >= 3  # aimed all around the building, as the cameras stand
    assert np.median(frame_on_walls) > 0.9


def test_a_night_copy_is_dark_warm_and_noisy_but_shows_the_scene(scene):
    from sfm_core.synthetic import night_copy

    for day in scene.images[::10]:
        for seed in range(4):
            night = night_copy(day, np.random.default_rng(seed))
            assert night.shape == day.shape and night.dtype == np.uint8
            assert 0.02 * day.mean() < night.mean() < 0.3 * day.mean()
            # Not black: what the day photo shows is still there.
            assert np.corrcoef(day.mean(-1).ravel(), night.mean(-1).ravel())[0, 1] > 0.6
            (r, _, b), (day_r, _, day_b) = night.mean((0, 1)), day.mean((0, 1))
            assert r / b > 1.3 * day_r / day_b  # sodium lamps: orange light
        assert np.array_equal(night, night_copy(day, np.random.default_rng(3)))
        assert not np.array_equal(night, night_copy(day, np.random.default_rng(4)))


def test_zoom_and_night_photos_are_listed_and_the_rest_of_the_collection_is_unchanged(tmp_path):
    import json

    from flows.synth import make_collection
    from sfm_core.synthetic import ZOOM_HFOV_DEG, CollectionCameras
    from storage.images import probe_image

    make_collection(str(tmp_path / "zn"), 8, seed=1, workers=2, nuisances=("zoom", "night"))
    make_collection(str(tmp_path / "plain"), 8, seed=1, workers=2)
    assert not (tmp_path / "plain" / "nuisances.json").exists()
    listed = json.loads((tmp_path / "zn" / "nuisances.json").read_text())
    assert set(listed) == {"zoom", "night"} and all(listed.values())
    names = sorted(p.name for p in (tmp_path / "zn" / "images").iterdir())
    assert set(listed["zoom"]) | set(listed["night"]) < set(names)
    truth, plain_truth = ({im.name: (rec, im) for im in rec.images.values()}
                          for rec in (pycolmap.Reconstruction(str(tmp_path / d / "gt")) for d in ("zn", "plain")))

    def intrinsics(found):
        rec, image = found
        camera = rec.cameras[image.camera_id]
        return (*camera.params, camera.width, camera.height)

    night_only = []
    for name in names:
        hfov = hfov_deg(intrinsics(truth[name]))
        photo, day = (np.asarray(Image.open(tmp_path / d / "images" / name), float) for d in ("zn", "plain"))
        if name in listed["zoom"]:
            assert ZOOM_HFOV_DEG[0] - 0.1 <= hfov <= ZOOM_HFOV_DEG[1] + 0.1
            # A zoom lens writes its focal length.
            assert probe_image(str(tmp_path / "zn" / "images" / name)).focal_length_px == pytest.approx(
                intrinsics(truth[name])[0], rel=0.02)
        else:
            low, high = CollectionCameras().hfov_deg
            assert low - 0.1 <= hfov <= high + 0.1
            assert intrinsics(truth[name]) == intrinsics(plain_truth[name])
        if name in listed["night"] and name not in listed["zoom"]:
            night_only.append(name)
            assert 0.02 * day.mean() < photo.mean() < 0.3 * day.mean()  # the same view by day
        if name not in listed["zoom"] + listed["night"]:
            assert (tmp_path / "zn" / "images" / name).read_bytes() == \
                (tmp_path / "plain" / "images" / name).read_bytes()
    assert night_only  # seed 1 has one, so the darkness was compared
