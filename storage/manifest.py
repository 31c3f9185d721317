"""The manifest: one row per file of the source, stored as Parquet.

Every file the source lists gets a row, usable or not, so a user can see why
a photo was left out. Schema (MANIFEST_SCHEMA):

    image_id         int32    1-based id of a usable photo, in row order; null unless status is "ok"
    name             string   path relative to the source root, "/"-separated (not null); for a
                              list file's entries, relative to the folder holding them all
    uri              string   absolute path or URI of the file (not null)
    sha256           string   hex digest of the file bytes; null if the file could not be read
    bytes            int64    file size; null if the file could not be read
    width            int32    viewed (EXIF-oriented) width in pixels; null if not an image
    height           int32    viewed (EXIF-oriented) height in pixels; null if not an image
    focal_length_px  float64  focal length in full-resolution pixels from EXIF; null if unknown or rejected
    focal_source     string   where the focal length of the photo's camera comes from: "exif",
                              "exif_rejected: <why>", "calibrated" (self-calibrated) or "known" (a
                              camera of --intrinsics); null if not an image. Ingest writes its own
                              judgement (ingest_focal_source); the end of the run resolves it
                              (flows.outcomes), with the intrinsics and the view graph's rejections
    exif_focal_mm    float64  EXIF FocalLength in mm; null if absent
    camera_make      string   EXIF Make; null if absent
    camera_model     string   EXIF Model; null if absent
    status           string   "ok", "duplicate of <name>", or why the photo is unusable (not null)
    ingest_focal_source string ingest's judgement from the file alone: "exif", "exif_rejected: <why>"
                              or "calibrated" (none usable in EXIF); what the stages read, so that
                              a re-run with other settings starts from it, not from a past result
    result           string   what the run made of a usable photo, written at its end: "sparse/<m>",
                              "sparse/<m>, pose undetermined: <why>", "left out: <why>" (the cameras
                              stage found it posed only by contradicted pairs, or the export could not
                              tell its side of a folded model) or "not registered";
                              null while the run goes on and for unusable files

A file with the same sha256 as an earlier usable one is the same photo: it is
processed once, under the earlier name, and its own row says whose duplicate it is.
"""

import os
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from storage.atomic import atomic_path
from storage.images import probe_image
from storage.sources import image_names
from storage.uris import is_local, local_path

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int32()),
        pa.field("name", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("focal_length_px", pa.float64()),
        pa.field("focal_source", pa.string()),
        pa.field("exif_focal_mm", pa.float64()),
        pa.field("camera_make", pa.string()),
        pa.field("camera_model", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("ingest_focal_source", pa.string()),
        pa.field("result", pa.string()),
    ]
)


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row; fields and nullability as in MANIFEST_SCHEMA."""

    image_id: int | None
    name: str
    uri: str
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    focal_length_px: float | None
    focal_source: str | None
    exif_focal_mm: float | None
    camera_make: str | None
    camera_model: str | None
    status: str
    ingest_focal_source: str | None = None
    result: str | None = None


def build_manifest(root: str, files: list[str], storage_options: dict | None = None) -> list[ManifestRow]:
    """Probe each of `files` (paths or URIs listed from the source `root`, in the order
    given) into a row; names as storage.sources.image_names gives them."""
    rows = []
    ok_names_by_sha = {}
    for path, name in zip(files, image_names(root, files)):
        probe = probe_image(path, storage_options)
        status, image_id = probe.status, None
        if status == "ok" and probe.sha256 in ok_names_by_sha:
            status = f"duplicate of {ok_names_by_sha[probe.sha256]}"
        if status == "ok":
            ok_names_by_sha[probe.sha256] = name
            image_id = len(ok_names_by_sha)
        rows.append(
            ManifestRow(
                image_id=image_id,
                name=name,
                uri=os.path.abspath(local_path(path)) if is_local(path) else path,
                sha256=probe.sha256,
                bytes=probe.bytes,
                width=probe.width,
                height=probe.height,
                focal_length_px=probe.focal_length_px,
                focal_source=probe.focal_source,
                exif_focal_mm=probe.exif_focal_mm,
                camera_make=probe.camera_make,
                camera_model=probe.camera_model,
                status=status,
                ingest_focal_source=probe.focal_source,
            )
        )
    return rows


def write_manifest(rows: list[ManifestRow], path: str) -> None:
    """Write `rows` to Parquet at `path` atomically: readers see the old file
    or the complete new one, never a partial write."""
    table = pa.Table.from_pylist([asdict(r) for r in rows], schema=MANIFEST_SCHEMA)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())


# Manifests written before 0.3.4 end before ingest_focal_source: their focal_source is ingest's.
_SCHEMA_BEFORE_0_3_4 = pa.schema(list(MANIFEST_SCHEMA)[:-2])


def read_manifest(path: str) -> list[ManifestRow]:
    table = pq.read_table(path)
    if table.schema.equals(_SCHEMA_BEFORE_0_3_4):
        return [ManifestRow(**row, ingest_focal_source=row["focal_source"]) for row in table.to_pylist()]
    if not table.schema.equals(MANIFEST_SCHEMA):
        raise ValueError(f"{path} is not a manifest: schema differs from MANIFEST_SCHEMA")
    return [ManifestRow(**row) for row in table.to_pylist()]
