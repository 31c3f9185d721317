"""Ingest storage side: listing a source, probing and loading photos, the manifest."""

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import ExifTags, Image, ImageDraw

from storage.images import ImageReadError, load_image, probe_image
from storage.manifest import MANIFEST_SCHEMA, build_manifest, read_manifest, write_manifest
from storage.sources import SourceError, list_image_files

REPO_ROOT = Path(__file__).resolve().parents[1]
TAG = ExifTags.Base
RED, BLUE = (255, 0, 0), (0, 0, 255)


def noise_image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def exif_with(ifd0=None, exif_ifd=None):
    exif = Image.Exif()
    exif.update(ifd0 or {})
    exif.get_ifd(ExifTags.IFD.Exif).update(exif_ifd or {})
    return exif


def marked_image(width, height, marker):
    """Blue image with a red `marker` x `marker` square in the top-left corner."""
    im = Image.new("RGB", (width, height), BLUE)
    ImageDraw.Draw(im).rectangle((0, 0, marker - 1, marker - 1), fill=RED)
    return im


def png_header_only(path, width, height):
    """A PNG declaring width x height pixels, without the pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def is_colour(pixel, colour, tol=40):
    return all(abs(int(p) - c) <= tol for p, c in zip(pixel, colour))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    noise_image(320, 240, seed=1).save(root / "a.jpg", quality=90)
    (root / "sub").mkdir()
    noise_image(300, 200, seed=2).save(root / "sub" / "b.jpg", quality=90)
    noise_image(200, 150, seed=3).save(root / "c.png")
    shutil.copy(root / "a.jpg", root / "copy_of_a.jpg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not a photo, just text\n")
    (root / "readme.txt").write_text("shot on a sunny day\n")
    noise_image(320, 240, seed=4).save(root / "truncated.jpg", quality=90)
    data = (root / "truncated.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (16, 16), BLUE).save(root / "tiny.png")
    png_header_only(root / "huge.png", 20000, 15000)
    marked_image(320, 240, 60).save(root / "portrait.jpg", exif=exif_with({TAG.Orientation: 6}))
    noise_image(400, 300, seed=5).save(
        root / "focal.jpg",
        exif=exif_with(
            {TAG.Make: "TestCam", TAG.Model: "T1\x00"},
            {TAG.FocalLengthIn35mmFilm: 28, TAG.FocalLength: 4.25},
        ),
    )
    noise_image(400, 300, seed=6).save(
        root / "focal_plane.jpg",
        # 400 px/cm = 40 px/mm on a camera writing 800 px wide images; this copy is 400 wide.
        exif=exif_with({}, {TAG.FocalLength: 20.0, TAG.FocalPlaneXResolution: 400.0,
                            TAG.FocalPlaneResolutionUnit: 3, TAG.ExifImageWidth: 800}),
    )
    (root / ".DS_Store").write_bytes(b"\x00junk")
    (root / ".thumbnails").mkdir()
    noise_image(100, 100).save(root / ".thumbnails" / "a.jpg")
    return root


@pytest.fixture(scope="module")
def rows(source):
    return {row.name: row for row in build_manifest(str(source), list_image_files(str(source)))}


def test_listing_is_recursive_sorted_and_skips_hidden(source):
    names = [Path(p).relative_to(source).as_posix() for p in list_image_files(str(source))]
    # Non-images (readme.txt, notes.jpg) are listed too; hidden files and folders are not.
    assert names == [
        "a.jpg", "c.png", "copy_of_a.jpg", "empty.jpg", "focal.jpg", "focal_plane.jpg", "huge.png",
        "notes.jpg", "portrait.jpg", "readme.txt", "sub/b.jpg", "tiny.png", "truncated.jpg",
    ]


def test_source_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceError, match="does not exist") as e:
        list_image_files(str(missing))
    assert str(missing) in str(e.value)

    a_file = tmp_path / "photo.jpg"
    a_file.write_bytes(b"x")
    with pytest.raises(SourceError, match="not a folder") as e:
        list_image_files(str(a_file))
    assert str(a_file) in str(e.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_bytes(b"x")
    with pytest.raises(SourceError, match="holds no files") as e:
        list_image_files(str(empty))
    assert str(empty) in str(e.value) and "\n" not in str(e.value)


def test_good_photos_are_ok(rows):
    for name, size in [("a.jpg", (320, 240)), ("sub/b.jpg", (300, 200)), ("c.png", (200, 150))]:
        row = rows[name]
        assert row.status == "ok", name
        assert (row.width, row.height) == size
        assert len(row.sha256) == 64 and row.bytes > 0


def test_bad_files_get_distinct_reasons(rows):
    assert rows["empty.jpg"].status == "empty file (0 bytes)"
    assert rows["notes.jpg"].status == "not an image (Pillow cannot identify it)"
    assert rows["readme.txt"].status == "not an image (Pillow cannot identify it)"
    assert rows["truncated.jpg"].status.startswith("corrupt or truncated image data (")
    assert "truncated" in rows["truncated.jpg"].status
    assert rows["tiny.png"].status == "image too small (16x16)"
    assert rows["huge.png"].status.startswith("image too large (20000x15000 = 300 MP")
    assert rows["copy_of_a.jpg"].status == "duplicate of a.jpg"
    # A bad file's header may still be readable; a non-image has no size.
    assert (rows["truncated.jpg"].width, rows["truncated.jpg"].height) == (320, 240)
    assert rows["notes.jpg"].width is None and rows["empty.jpg"].sha256 is not None


def test_image_ids_number_usable_photos_only(rows):
    ordered = sorted(rows.values(), key=lambda r: r.name)
    ids = [r.image_id for r in ordered if r.image_id is not None]
    assert ids == list(range(1, len(ids) + 1))
    assert all((r.image_id is not None) == (r.status == "ok") for r in ordered)
    assert rows["copy_of_a.jpg"].sha256 == rows["a.jpg"].sha256


def test_exif_orientation_swaps_size_and_rotates_pixels(source, rows):
    assert (rows["portrait.jpg"].width, rows["portrait.jpg"].height) == (240, 320)
    loaded = load_image(str(source / "portrait.jpg"), 1024)
    assert loaded.pixels.shape == (320, 240, 3) and loaded.pixels.dtype == np.uint8
    # Orientation 6 = rotate 90 degrees clockwise to view: stored top-left -> top-right.
    assert is_colour(loaded.pixels[10, 229], RED)
    assert is_colour(loaded.pixels[10, 10], BLUE)
    assert is_colour(loaded.pixels[309, 229], BLUE)


def test_focal_length_from_exif(rows):
    focal = rows["focal.jpg"]
    assert focal.focal_length_px == pytest.approx(28 / 36 * 400)
    assert focal.exif_focal_mm == pytest.approx(4.25)
    assert (focal.camera_make, focal.camera_model) == ("TestCam", "T1")
    # 20 mm * 40 px/mm = 800 px at the camera's 800 px width; this copy is half as wide.
    assert rows["focal_plane.jpg"].focal_length_px == pytest.approx(400.0)
    assert rows["a.jpg"].focal_length_px is None and rows["a.jpg"].camera_make is None


def test_load_image_downscales_with_exact_scale(source):
    loaded = load_image(str(source / "c.png"), 100)
    assert loaded.pixels.shape == (75, 100, 3)
    assert (loaded.width, loaded.height) == (200, 150)
    assert loaded.scale == 2.0 and loaded.scale_xy == (2.0, 2.0)

    full = load_image(str(source / "c.png"), 4096)  # never upscaled
    assert full.pixels.shape == (150, 200, 3) and full.scale == 1.0
    assert np.array_equal(full.pixels, np.asarray(Image.open(source / "c.png").convert("RGB")))


def test_load_image_errors_name_the_file(source):
    for name in ["truncated.jpg", "notes.jpg", "empty.jpg"]:
        with pytest.raises(ImageReadError) as e:
            load_image(str(source / name), 512)
        assert str(source / name) in str(e.value)
        assert e.value.reason == probe_image(str(source / name)).status


def test_manifest_round_trips_through_parquet(tmp_path, rows):
    path = tmp_path / "manifest.parquet"
    written = sorted(rows.values(), key=lambda r: r.name)
    write_manifest(written, str(path))
    write_manifest(written, str(path))  # replacing an existing manifest works too
    assert pq.read_schema(path).equals(MANIFEST_SCHEMA)
    assert read_manifest(str(path)) == written
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]  # no temp files left


_MEASURE_LARGE = """
import json, resource, sys
from storage.images import load_image, probe_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loaded = load_image(sys.argv[1], 1024)
probe = probe_image(sys.argv[1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "shape": loaded.pixels.shape, "scale": loaded.scale, "scale_xy": loaded.scale_xy,
    "corner": loaded.pixels[20, 20].tolist(), "centre": loaded.pixels[400, 600].tolist(),
    "status": probe.status, "size": [probe.width, probe.height],
    "peak_growth_mb": (peak - before) / 1024,
}))
"""


def test_large_jpeg_loads_with_bounded_memory(tmp_path):
    path = tmp_path / "large.jpg"
    marked_image(12000, 9000, 1500).save(path, quality=85)  # 108 MP, smooth so it encodes fast
    # A fresh process, so the peak RSS measures only the load (this one held the 324 MB original).
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE_LARGE, str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout)
    assert result["shape"] == [768, 1024, 3]
    assert result["scale"] == pytest.approx(12000 / 1024)
    assert result["scale_xy"] == pytest.approx([12000 / 1024, 9000 / 768])
    assert is_colour(result["corner"], RED) and is_colour(result["centre"], BLUE)
    assert result["status"] == "ok" and result["size"] == [12000, 9000]
    assert result["peak_growth_mb"] < 300


def exif_photo(path, size, focal_35mm, exif_size=None, software=None):
    """A noise JPEG of `size` whose EXIF gives a 35 mm-equivalent focal, optionally the camera's
    pixel dimensions (ExifImageWidth/Height) and a Software tag."""
    details = {TAG.FocalLengthIn35mmFilm: focal_35mm, TAG.FocalLength: round(focal_35mm / 7.0, 2)}
    if exif_size:
        details.update({TAG.ExifImageWidth: exif_size[0], TAG.ExifImageHeight: exif_size[1]})
    noise_image(*size, seed=sum(size) + focal_35mm).save(
        path, exif=exif_with({TAG.Software: software} if software else {}, details))


def test_focal_source_says_where_the_focal_comes_from_and_why_exif_is_rejected(tmp_path):
    exif_photo(tmp_path / "plain.jpg", (400, 300), 28)  # 0.78x the long side: a phone's main lens
    exif_photo(tmp_path / "resized.jpg", (400, 300), 50, exif_size=(4000, 3000))  # a scaled-down copy
    exif_photo(tmp_path / "absurd.jpg", (400, 300), 1600)  # 44x the long side
    exif_photo(tmp_path / "cropped.jpg", (400, 200), 35, exif_size=(4032, 3024))
    exif_photo(tmp_path / "edited.jpg", (400, 300), 35, exif_size=(4000, 3000),
               software="Adobe Photoshop 25.1 (Macintosh)")
    exif_photo(tmp_path / "edited_full_size.jpg", (400, 300), 35, exif_size=(400, 300), software="GIMP 2.10.34")
    noise_image(400, 300, seed=9).save(tmp_path / "no_exif.jpg")
    (tmp_path / "broken.jpg").write_text("not a photo")
    rows = {r.name: r for r in build_manifest(str(tmp_path), list_image_files(str(tmp_path)))}

    assert rows["plain.jpg"].focal_source == "exif"
    assert rows["plain.jpg"].focal_length_px == pytest.approx(28 / 36 * 400)
    assert rows["resized.jpg"].focal_source == "exif"
    assert rows["resized.jpg"].focal_length_px == pytest.approx(50 / 36 * 400)
    assert rows["edited_full_size.jpg"].focal_source == "exif"
    assert rows["no_exif.jpg"].focal_source == "calibrated" and rows["no_exif.jpg"].focal_length_px is None
    assert rows["broken.jpg"].focal_source is None

    # A rejected focal is not used (the camera is self-calibrated) and the reason names it.
    rejected = {name: rows[name] for name in ("absurd.jpg", "cropped.jpg", "edited.jpg")}
    for name, row in rejected.items():
        assert row.status == "ok", name
        assert row.focal_length_px is None, name
        assert row.focal_source.startswith("exif_rejected: "), name
    assert rows["absurd.jpg"].focal_source == (
        "exif_rejected: focal 17778 px is 44x the long side (400 px), outside 0.3x-25x "
        "(11-900 mm full-frame equivalent)")
    assert rows["cropped.jpg"].focal_source.startswith(
        "exif_rejected: cropped: stored 400x200 (aspect 2.00) against EXIF 4032x3024 (aspect 1.33)")
    assert "'Adobe Photoshop 25.1 (Macintosh)'" in rows["edited.jpg"].focal_source
    assert "possibly cropped" in rows["edited.jpg"].focal_source


def test_focal_range_follows_real_lenses(tmp_path):
    # 12 mm (an ultra-wide) and 800 mm (a super-telephoto) equivalents pass; 8 mm and 1000 mm do not.
    for focal in (8, 12, 800, 1000):
        exif_photo(tmp_path / f"f{focal:04d}.jpg", (600, 400), focal)
    sources = {r.name: r.focal_source.split(":")[0]
               for r in build_manifest(str(tmp_path), list_image_files(str(tmp_path)))}
    assert sources == {"f0008.jpg": "exif_rejected", "f0012.jpg": "exif", "f0800.jpg": "exif",
                       "f1000.jpg": "exif_rejected"}


def test_known_intrinsics_override_the_recorded_focal_source(tmp_path):
    from flows.outcomes import focal_sources  # imports Prefect and torch: only here
    from flows.stage_io import count_focal_sources

    exif_photo(tmp_path / "exif.jpg", (400, 300), 28)
    exif_photo(tmp_path / "absurd.jpg", (600, 400), 1600)
    noise_image(400, 300, seed=9).save(tmp_path / "no_exif.jpg")
    noise_image(500, 300, seed=8).save(tmp_path / "other.jpg")
    rows = build_manifest(str(tmp_path), list_image_files(str(tmp_path)))
    recorded = [r.focal_source.split(":")[0] for r in rows]
    assert recorded == ["exif_rejected", "exif", "calibrated", "calibrated"]
    # Photos of a --intrinsics camera's size take it, whatever ingest recorded.
    sources = focal_sources(rows, ["PINHOLE 400 300 350 350 200 150"])
    assert [s.split(":")[0] for s in sources] == ["exif_rejected", "known", "known", "calibrated"]
    assert count_focal_sources(sources) == {"exif": 0, "exif_rejected": 1, "calibrated": 1, "known": 2}
    assert count_focal_sources(r.focal_source for r in rows) == {"exif": 1, "exif_rejected": 1, "calibrated": 2,
                                                                  "known": 0}
