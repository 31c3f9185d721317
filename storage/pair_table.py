"""pairs.parquet: the verified image pairs.

Schema: image_id1, image_id2 (int32, manifest ids), num_matches (int32, putative),
num_inliers (int32), configuration (string, COLMAP two-view configuration),
rotation_xyzw (list<float64>[4], null if no pose), translation (list<float64>[3]),
fundamental (list<float64>[9], row-major, null if none),
inliers (list<uint32>: flattened (K, 2) keypoint index pairs).
"""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sfm_core.verification import VerifiedPair
from storage.atomic import atomic_path

PAIR_SCHEMA = pa.schema([
    pa.field("image_id1", pa.int32()),
    pa.field("image_id2", pa.int32()),
    pa.field("num_matches", pa.int32()),
    pa.field("num_inliers", pa.int32()),
    pa.field("configuration", pa.string()),
    pa.field("rotation_xyzw", pa.list_(pa.float64(), 4)),
    pa.field("translation", pa.list_(pa.float64(), 3)),
    pa.field("fundamental", pa.list_(pa.float64(), 9)),
    pa.field("inliers", pa.list_(pa.uint32())),
])


def write_pairs(path: str, pairs: list[VerifiedPair], image_ids: list[int]) -> None:
    """pairs index frames; image_ids[frame] is the manifest id written to the table."""
    columns = {
        "image_id1": [image_ids[p.index1] for p in pairs],
        "image_id2": [image_ids[p.index2] for p in pairs],
        "num_matches": [p.num_matches for p in pairs],
        "num_inliers": [len(p.inliers) for p in pairs],
        "configuration": [p.configuration for p in pairs],
        "rotation_xyzw": [None if p.rotation_xyzw is None else p.rotation_xyzw.tolist() for p in pairs],
        "translation": [None if p.translation is None else p.translation.tolist() for p in pairs],
        "fundamental": [None if p.fundamental is None else p.fundamental.reshape(-1).tolist() for p in pairs],
        "inliers": [p.inliers.reshape(-1).tolist() for p in pairs],
    }
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns, schema=PAIR_SCHEMA), tmp)


def read_pairs(path: str, image_ids: list[int]) -> list[VerifiedPair]:
    """Inverse of write_pairs: the pairs among image_ids, indexed by position in image_ids
    (a chunk reads only its own pairs)."""
    frame_of = {image_id: frame for frame, image_id in enumerate(image_ids)}
    ids = [int(i) for i in image_ids]
    table = pq.read_table(path, filters=[("image_id1", "in", ids), ("image_id2", "in", ids)]).to_pylist()
    return [
        VerifiedPair(
            frame_of[row["image_id1"]], frame_of[row["image_id2"]], row["num_matches"],
            np.asarray(row["inliers"], np.uint32).reshape(-1, 2), row["configuration"],
            None if row["rotation_xyzw"] is None else np.asarray(row["rotation_xyzw"]),
            None if row["translation"] is None else np.asarray(row["translation"]),
            None if row["fundamental"] is None else np.asarray(row["fundamental"]).reshape(3, 3),
        )
        for row in table
    ]
