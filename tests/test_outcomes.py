"""The end of a run writes each photo's focal source and result into the manifest."""
from types import SimpleNamespace

import numpy as np
import pycolmap
import pytest

from flows.layout import OutputLayout
from flows.outcomes import UNDECIDED_SIDE, photo_results, record_outcomes
from storage.colmap_model import write_model
from storage.manifest import build_manifest, read_manifest, write_manifest
from storage.sources import list_image_files
from test_ingest import exif_photo, noise_image


def _model_of(names: list[str], width: int, height: int) -> pycolmap.Reconstruction:
    """A model in which `names` are registered (identity rotations, cameras 1 apart)."""
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="SIMPLE_PINHOLE", width=width, height=height,
                                                    params=[width, width / 2, height / 2]))
    for index, name in enumerate(names):
        image = pycolmap.Image(name=name, keypoints=np.zeros((0, 2)), camera_id=1, image_id=index + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(), [float(index), 0.0, 0.0]))
    return rec


def test_photo_results_say_what_became_of_each_photo():
    rows = [SimpleNamespace(name=name, status=status) for name, status in
            (("a.jpg", "ok"), ("b.jpg", "ok"), ("c.jpg", "ok"), ("d.jpg", "ok"), ("e.jpg", "empty file (0 bytes)"),
             ("f.jpg", "ok"))]
    results = photo_results(rows, {"a.jpg": "sparse/0", "b.jpg": "sparse/0", "f.jpg": "sparse/1"},
                            {"b.jpg": "2 observations"}, {"c.jpg": "its relative poses break the rotation loops"})
    assert results == ["sparse/0", "sparse/0, pose undetermined: 2 observations",
                       "left out: its relative poses break the rotation loops", "not registered", None, "sparse/1"]


def test_the_manifest_records_the_resolved_focal_source_and_the_result(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    exif_photo(photos / "a.jpg", (400, 300), 28)
    exif_photo(photos / "b.jpg", (400, 300), 35)
    noise_image(500, 300, seed=3).save(photos / "c.jpg")
    noise_image(500, 300, seed=4).save(photos / "d.jpg")
    (photos / "e.jpg").write_bytes(b"")
    noise_image(500, 300, seed=6).save(photos / "f.jpg")
    layout = OutputLayout(tmp_path / "out")
    layout.root.mkdir()
    write_manifest(build_manifest(str(photos), list_image_files(str(photos))), str(layout.manifest))
    write_model(_model_of(["a.jpg", "b.jpg", "c.jpg"], 400, 300), layout.sparse / "0")
    stages = {"cameras": {"chunks": [{"exif_rejected": {"b.jpg": "contradicted by the view graph: EXIF 392 px"},
                                      "left_out_for_contradictions": {"d.jpg": "its relative poses break the loops"}}]},
              "merge": {"folds": [{"photos": 40, "share": 0.5, "sides": [18, 20], "undecided": ["f.jpg"],
                                   "outcome": "split"}]},
              "export": {"models": [{"model": "sparse/0", "undetermined": {"c.jpg": "too few observations"}}]}}

    record_outcomes(layout, (), stages)
    rows = {r.name: r for r in read_manifest(str(layout.manifest))}
    assert {n: (r.focal_source, r.result) for n, r in rows.items()} == {
        "a.jpg": ("exif", "sparse/0"),
        "b.jpg": ("exif_rejected: contradicted by the view graph: EXIF 392 px", "sparse/0"),
        "c.jpg": ("calibrated", "sparse/0, pose undetermined: too few observations"),
        "d.jpg": ("calibrated", "left out: its relative poses break the loops"),
        "e.jpg": (None, None),
        "f.jpg": ("calibrated", f"left out: {UNDECIDED_SIDE}")}
    assert rows["b.jpg"].ingest_focal_source == "exif"

    # A re-run with other settings resolves from what ingest read, not from the last result:
    # a --intrinsics camera of the 500x300 photos, and no rejection this time.
    record_outcomes(layout, ("PINHOLE 500 300 450 450 250 150",), {"export": {"models": []}})
    rows = {r.name: r for r in read_manifest(str(layout.manifest))}
    assert [rows[f"{n}.jpg"].focal_source for n in "abcdf"] == ["exif", "exif", "known", "known", "known"]
    assert [rows[f"{n}.jpg"].result for n in "abcdf"] == ["sparse/0"] * 3 + ["not registered"] * 2


def test_a_manifest_from_before_0_3_4_reads_with_ingest_focal_source_and_other_tables_do_not(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from dataclasses import asdict
    from storage.manifest import MANIFEST_SCHEMA

    noise_image(320, 240, seed=5).save(tmp_path / "a.jpg")
    [row] = build_manifest(str(tmp_path), list_image_files(str(tmp_path)))
    old_fields = list(MANIFEST_SCHEMA)[:-2]
    old = {k: v for k, v in asdict(row).items() if k in {f.name for f in old_fields}}
    pq.write_table(pa.Table.from_pylist([old], schema=pa.schema(old_fields)), tmp_path / "old.parquet")
    [read] = read_manifest(str(tmp_path / "old.parquet"))
    assert read.ingest_focal_source == read.focal_source == "calibrated" and read.result is None
    pq.write_table(pa.table({"name": ["a.jpg"]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="is not a manifest"):
        read_manifest(str(tmp_path / "other.parquet"))
