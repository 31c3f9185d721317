"""Point colours: bilinear sampling at COLMAP pixel coordinates (sfm_core.colours), the export's
colouring from our own decoder (every format ingest reads), and the flow end to end."""
import os
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import ExifTags, Image

from sfm_core.colours import mean_colours, observation_colours, sample_bilinear
from storage.images import load_image

W, H = 96, 64  # the test photos' viewed size (at least storage.images.MIN_IMAGE_SIDE)
ORIENTATION = ExifTags.Base.Orientation
# EXIF orientation -> the transpose that turns the viewed pixels into the stored ones.
STORED_FROM_VIEWED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def affine_image(width: int, height: int) -> np.ndarray:
    """(height, width, 3) float64 whose channels are affine in the pixel centres (affine_at)."""
    x, y = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return affine_at(np.stack([x.ravel(), y.ravel()], 1), width, height).reshape(height, width, 3)


def affine_at(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 3) the colours of affine_image(width, height) at (N, 2) COLMAP pixel coordinates."""
    x, y = (xy[:, 0] - 0.5) / width, (xy[:, 1] - 0.5) / height
    return np.stack([192 * x + 30, 128 * y + 20, 64 * (x + y)], 1)


def centres(rng, n: int, width: int = W, height: int = H) -> np.ndarray:
    """(n, 2) distinct pixel centres of a width x height image, COLMAP coordinates."""
    flat = rng.choice(width * height, n, replace=False)
    return np.stack([flat % width + 0.5, flat // width + 0.5], 1)


def write_png16(rgb: np.ndarray, path: Path, rng) -> None:
    """A 16-bit RGB PNG whose high bytes are `rgb` (H, W, 3) uint8 and whose low bytes are
    noise (Pillow cannot write one from an array)."""
    h, w = rgb.shape[:2]
    deep = (rgb.astype(np.uint16) << 8 | rng.integers(0, 256, rgb.shape, dtype=np.uint16)).astype(">u2")
    raw = b"".join(b"\x00" + deep[row].tobytes() for row in range(h))  # filter type 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_pgm16(rgb: np.ndarray, path: Path, rng) -> None:
    """A 16-bit greyscale PGM whose high bytes are the first channel of `rgb` (Pillow reads
    it as mode "I", 32-bit integers)."""
    grey = rgb[..., 0].astype(np.uint16) << 8 | rng.integers(0, 256, rgb.shape[:2], dtype=np.uint16)
    path.write_bytes(b"P5\n%d %d\n65535\n" % (rgb.shape[1], rgb.shape[0]) + grey.astype(">u2").tobytes())


def save_rotated(rgb: np.ndarray, path: Path, orientation: int, **options) -> None:
    """Store `rgb` turned so that a viewer applying EXIF `orientation` shows `rgb` again."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(rgb).transpose(STORED_FROM_VIEWED[orientation]).save(path, exif=exif, **options)


# ------------------------------------------------------------------ sampling


def test_samples_at_pixel_centres_are_the_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    xy = centres(rng, 200)
    rows, cols = (xy[:, 1] - 0.5).astype(int), (xy[:, 0] - 0.5).astype(int)
    np.testing.assert_array_equal(sample_bilinear(image, xy), image[rows, cols])


def test_between_centres_the_sample_is_bilinear():
    image = affine_image(W, H)  # bilinear interpolation reproduces an affine image exactly
    rng = np.random.default_rng(1)
    xy = rng.uniform([0.5, 0.5], [W - 0.5, H - 0.5], (500, 2))
    np.testing.assert_allclose(sample_bilinear(image, xy), affine_at(xy, W, H), atol=1e-9)
    # Midway between four centres: their mean.
    two_by_two = np.array([[[0, 0, 0], [10, 20, 30]], [[40, 80, 120], [50, 100, 150]]], np.uint8)
    np.testing.assert_allclose(sample_bilinear(two_by_two, [[1.0, 1.0]]), [[25, 50, 75]])


def test_within_half_a_pixel_of_the_border_the_border_pixel_counts():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    corners = np.array([[0.0, 0.0], [0.3, 0.1], [W, H], [W - 0.2, H - 0.4], [0.0, H], [W, 0.0]])
    expected = image[[0, 0, -1, -1, -1, 0], [0, 0, -1, -1, 0, -1]]
    np.testing.assert_array_equal(sample_bilinear(image, corners), expected)


def test_full_resolution_coordinates_map_to_a_downscaled_image():
    # A 2x box reduction of an affine image is affine in the same extent: a full-resolution
    # observation samples the small image at xy / 2, with no half-pixel offset.
    small = affine_image(2 * W, 2 * H).reshape(H, 2, W, 2, 3).mean((1, 3))
    rng = np.random.default_rng(3)
    xy_full = rng.uniform([1.0, 1.0], [2 * W - 1.0, 2 * H - 1.0], (300, 2))
    np.testing.assert_allclose(observation_colours(small, xy_full, (2.0, 2.0)),
                               affine_at(xy_full, 2 * W, 2 * H), atol=1e-9)


def test_a_point_gets_the_rounded_mean_of_its_observations():
    ids, colours = mean_colours([7, 3, 7, 7, 3], [[0, 0, 255], [1, 2, 3], [1, 0, 254], [2, 1, 254], [2, 3, 4]])
    np.testing.assert_array_equal(ids, [3, 7])
    # point 3: (1.5, 2.5, 3.5) rounds half up; point 7: (1, 1/3, 254.33)
    np.testing.assert_array_equal(colours, [[2, 3, 4], [1, 0, 254]])
    assert colours.dtype == np.uint8
    with pytest.raises(ValueError, match="3 point ids for 2 colours"):
        mean_colours([1, 2, 3], [[0, 0, 0], [1, 1, 1]])


# ------------------------------------------------------------------ the export's colouring


def model_of(photos: dict[str, list[tuple[int, np.ndarray]]], size: tuple[int, int] = (W, H)):
    """A model of photos of `size` (width, height): photos[name] = [(point label, xy (2,) COLMAP
    pixel coordinates)]. Returns (the model, {point label: its point3D id})."""
    rec = pycolmap.Reconstruction()
    width, height = size
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=width, height=height,
                                                    params=[width, width, width / 2, height / 2], camera_id=1))
    tracks = {}
    for image_id, (name, observations) in enumerate(photos.items(), start=1):
        points2D = pycolmap.Point2DList([pycolmap.Point2D(np.asarray(xy, float)) for _, xy in observations])
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=1, image_id=image_id, points2D=points2D),
                                         pycolmap.Rigid3d())
        for index, (label, _) in enumerate(observations):
            tracks.setdefault(label, pycolmap.Track()).add_element(image_id, index)
    return rec, {label: rec.add_point3D(np.array([0.0, 0.0, 1.0]), track) for label, track in tracks.items()}


@pytest.fixture(scope="module")
def photos_in_every_format(tmp_path_factory):
    """name -> (its viewed pixels (H, W, 3) uint8, its URI), in each format the export must read."""
    folder = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(4)
    writers = {
        "plain.png": lambda rgb, path: Image.fromarray(rgb).save(path),
        "lossless.webp": lambda rgb, path: Image.fromarray(rgb).save(path, lossless=True),
        "rotated.tif": lambda rgb, path: save_rotated(rgb, path, 6),
        "rotated.webp": lambda rgb, path: save_rotated(rgb, path, 8, lossless=True),
        "deep.png": lambda rgb, path: write_png16(rgb, path, rng),
        "cmyk.tif": lambda rgb, path: Image.fromarray(rgb).convert("CMYK").save(path),
        "grey.pgm": lambda rgb, path: write_pgm16(rgb, path, rng),
    }
    photos = {}
    for name, write in writers.items():
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        if name == "grey.pgm":
            rgb = rgb[..., :1].repeat(3, 2)  # what a grey photo shows
        write(rgb, folder / name)
        photos[name] = rgb, str(folder / name)
    return photos


def test_each_format_gives_the_exact_colours_at_pixel_centres(photos_in_every_format, tmp_path):
    from flows.tasks import _colour_points
    rng = np.random.default_rng(5)
    names = list(photos_in_every_format)
    observations = {name: [((name, i), xy) for i, xy in enumerate(centres(rng, 8))] for name in names}
    # One point seen in two photos at pixel centres: the mean of the two pixels.
    a, b = centres(rng, 2)
    observations["plain.png"].append(("shared", a))
    observations["rotated.tif"].append(("shared", b))
    # A photo that became unreadable after ingest: its point gets no colour.
    broken = tmp_path / "broken.png"
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(broken)
    broken.write_bytes(broken.read_bytes()[:200])
    observations["broken.png"] = [("unseen", centres(rng, 1)[0])]
    rec, ids = model_of(observations)
    uris = {name: uri for name, (_, uri) in photos_in_every_format.items()} | {"broken.png": str(broken)}

    failed = _colour_points([rec], uris, 4096, None)

    assert len(failed) == 1 and failed[0].startswith("broken.png: corrupt or truncated image data"), failed
    for name in names:
        pixels = photos_in_every_format[name][0]
        for label, xy in observations[name][:8]:
            expected = pixels[int(xy[1]), int(xy[0])]
            assert tuple(rec.point3D(ids[label]).color) == tuple(expected), (name, xy)
    pa = photos_in_every_format["plain.png"][0][int(a[1]), int(a[0])].astype(float)
    pb = photos_in_every_format["rotated.tif"][0][int(b[1]), int(b[0])].astype(float)
    np.testing.assert_array_equal(rec.point3D(ids["shared"]).color, np.floor((pa + pb) / 2 + 0.5))
    np.testing.assert_array_equal(rec.point3D(ids["unseen"]).color, [0, 0, 0])


def test_photos_decoded_at_reduced_size_give_the_same_colours(tmp_path):
    from flows.tasks import _colour_points
    # A 4W x 4H photo decoded at W x H: Pillow's Lanczos weights are symmetric and sum to
    # one, so away from the border an affine image stays affine (to rounding).
    size = (4 * W, 4 * H)
    path = tmp_path / "large.png"
    Image.fromarray(np.round(affine_image(*size)).astype(np.uint8)).save(path)
    rng = np.random.default_rng(6)
    xy = rng.uniform([16.0, 16.0], [size[0] - 16.0, size[1] - 16.0], (50, 2))  # full-resolution coordinates
    rec, ids = model_of({"large.png": list(enumerate(xy))}, size)

    assert _colour_points([rec], {"large.png": str(path)}, W, None) == []

    got = np.array([rec.point3D(ids[i]).color for i in range(len(xy))], float)
    np.testing.assert_allclose(got, affine_at(xy, *size), atol=1.5)


# ------------------------------------------------------------------ the flow end to end


@contextmanager
def stderr_of_this_process(path: Path):
    """Everything written to file descriptor 2 meanwhile (COLMAP's C++ log goes there, past
    Python's sys.stderr) is copied into `path`, with COLMAP's warnings let through (the
    project hides them by default: the check is that none is raised, not that none shows)."""
    saved, level = os.dup(2), pycolmap.logging.minloglevel
    with open(path, "wb") as out:
        os.dup2(out.fileno(), 2)
        pycolmap.logging.minloglevel = 1  # glog: 0 INFO, 1 WARNING, 2 ERROR
        try:
            yield
        finally:
            pycolmap.logging.minloglevel = level
            os.dup2(saved, 2)
            os.close(saved)


# Frames of the scene saved in other formats than JPEG: frame -> (name, writer of its pixels).
SPECIAL_PHOTOS = {
    1: ("img_001.webp", lambda rgb, path: Image.fromarray(rgb).save(path, quality=90)),
    2: ("img_002.tif", lambda rgb, path: Image.fromarray(rgb).save(path)),
    3: ("img_003.png", lambda rgb, path: write_png16(rgb, path, np.random.default_rng(7))),
    4: ("img_004.jpg", lambda rgb, path: Image.fromarray(rgb).convert("CMYK").save(path, quality=92)),
    5: ("img_005.jpg", lambda rgb, path: save_rotated(rgb, path, 6, quality=92)),
}


@pytest.fixture(scope="module")
def mixed_formats_run(tmp_path_factory, prefect_api):
    """8 rendered photos of the landmark, 5 of them WebP, TIFF, 16-bit PNG, CMYK JPEG and an
    EXIF-rotated JPEG, reconstructed by the flow. Returns (scene, {name: frame}, folder, out,
    report, what the process wrote to its stderr)."""
    from flows.reconstruct import reconstruct
    from sfm_core.synthetic import render_scene
    from storage.synthetic_io import load_package_textures, write_jpeg
    scene = render_scene(load_package_textures(), n_cameras=8, image_size=(320, 240), arc_deg=120)
    folder = tmp_path_factory.mktemp("mixed") / "images"
    folder.mkdir()
    frames = {}
    for frame, (name, rgb) in enumerate(zip(scene.names, scene.images)):
        name, write = SPECIAL_PHOTOS.get(frame, (name, write_jpeg))
        write(rgb, folder / name)
        frames[name] = frame
    out = tmp_path_factory.mktemp("out")
    log = out.parent / f"{out.name}.stderr"
    with stderr_of_this_process(log):
        report = reconstruct(str(folder), str(out))
    return scene, frames, folder, out, report, log.read_text(errors="replace")


def test_capture_would_see_colmaps_reader_warnings(tmp_path):
    # The control for the check below: COLMAP's own colouring warns for every photo it cannot
    # read (here: all, the folder is empty), and the capture sees it.
    rec, _ = model_of({"photo.webp": [(0, np.array([1.5, 1.5]))]})
    with stderr_of_this_process(tmp_path / "stderr"):
        rec.extract_colors_for_all_images(str(tmp_path))
    assert "Could not read image photo.webp" in (tmp_path / "stderr").read_text()


def test_every_format_is_registered_without_colmap_reader_warnings(mixed_formats_run):
    scene, frames, folder, out, report, stderr = mixed_formats_run
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert {image.name for image in model.images.values() if image.has_pose} == set(frames)
    assert report["totals"]["registered"] == len(frames) == 8
    assert report["stages"]["export"]["uncoloured_images"] == 0
    assert "Could not read image" not in stderr


def test_each_format_gives_the_scenes_colours(mixed_formats_run):
    """Each photo's colours at its observations match the rendered pixels it was saved from,
    and the exported colour of every point is the mean over all its photos."""
    scene, frames, folder, out, report, stderr = mixed_formats_run
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    point_ids, decoded, rendered = [], [], []
    for image in model.images.values():
        observed = image.get_observation_points2D()
        ids = np.array([p.point3D_id for p in observed])
        xy = np.array([p.xy for p in observed])
        photo = load_image(str(folder / image.name), 1024)
        from_file = observation_colours(photo.pixels, xy, photo.scale_xy)
        truth = sample_bilinear(scene.images[frames[image.name]], xy)
        error = np.abs(from_file - truth).mean(1)
        # Lossy compression moves a few levels (JPEG and WebP here: a mean of 3 to 3.5, the
        # lossless ones 0); a photo read turned, mirrored, inverted or clipped is off by tens.
        assert len(ids) >= 50 and np.mean(error) < 6, (image.name, len(ids), np.mean(error))
        point_ids.append(ids), decoded.append(from_file), rendered.append(truth)
    ids, expected = mean_colours(np.concatenate(point_ids), np.concatenate(decoded))
    exported = np.array([model.point3D(int(i)).color for i in ids], float)
    np.testing.assert_allclose(exported, expected, atol=1)
    _, truth = mean_colours(np.concatenate(point_ids), np.concatenate(rendered))
    assert np.abs(exported - truth).mean() < 3
