"""chunks.parquet: the overlapping chunks the view graph was cut into.

Schema, one row per chunk: chunk (int32, its index: the chunk-<k> of tracks.zarr, models/
and the task names), num_images (int32), image_ids (list<int32>, manifest ids),
image_names (list<string>), anchor_image_id (int32, the chunk's best-connected image),
anchor_name (string).
"""
import pyarrow as pa
import pyarrow.parquet as pq

from sfm_core.chunking import Chunk
from storage.atomic import atomic_path

CHUNK_SCHEMA = pa.schema([
    pa.field("chunk", pa.int32()),
    pa.field("num_images", pa.int32()),
    pa.field("image_ids", pa.list_(pa.int32())),
    pa.field("image_names", pa.list_(pa.string())),
    pa.field("anchor_image_id", pa.int32()),
    pa.field("anchor_name", pa.string()),
])


def write_chunks(path: str, chunks: list[Chunk], rows) -> None:
    """chunks index frames of `rows` (the usable manifest rows)."""
    columns = {
        "chunk": [c.index for c in chunks],
        "num_images": [len(c.frames) for c in chunks],
        "image_ids": [[rows[f].image_id for f in c.frames] for c in chunks],
        "image_names": [[rows[f].name for f in c.frames] for c in chunks],
        "anchor_image_id": [rows[c.anchor].image_id for c in chunks],
        "anchor_name": [rows[c.anchor].name for c in chunks],
    }
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns, schema=CHUNK_SCHEMA), tmp)


def read_chunks(path: str, rows) -> list[Chunk]:
    """Inverse of write_chunks: chunks indexing frames of `rows` again."""
    frame_of = {r.image_id: frame for frame, r in enumerate(rows)}
    return [Chunk(row["chunk"], [frame_of[i] for i in row["image_ids"]], frame_of[row["anchor_image_id"]])
            for row in pq.read_table(path).to_pylist()]
