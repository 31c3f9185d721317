"""stages.parquet: the per-stage reports of the last run, one row per stage and chunk.

Schema: stage (string), chunk (int32, null for a collection-wide stage), status (string:
ran, reused or failed), seconds (float64), key (string, the checkpoint key),
details (string: the rest of the stage's report as JSON).
"""
import json

import pyarrow as pa
import pyarrow.parquet as pq

from storage.atomic import atomic_path

STAGE_SCHEMA = pa.schema([
    pa.field("stage", pa.string()),
    pa.field("chunk", pa.int32()),
    pa.field("status", pa.string()),
    pa.field("seconds", pa.float64()),
    pa.field("key", pa.string()),
    pa.field("details", pa.string()),
])
_COLUMNS = ("chunk", "status", "seconds", "key")


def _row(stage: str, report: dict) -> dict:
    details = {k: v for k, v in report.items() if k not in _COLUMNS}
    return {"stage": stage, "chunk": report.get("chunk"), "status": report.get("status"),
            "seconds": report.get("seconds"), "key": report.get("key"), "details": json.dumps(details)}


def write_stage_table(path: str, stages: dict[str, dict]) -> None:
    """stages: {stage: report}; a per-chunk stage's report lists its chunks' under "chunks"."""
    rows = []
    for stage, report in stages.items():
        per_chunk = report.get("chunks")
        if isinstance(per_chunk, list):
            rows += [_row(stage, chunk_report) for chunk_report in per_chunk]
        else:
            rows.append(_row(stage, report))
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=STAGE_SCHEMA), tmp)


def read_stage_table(path: str) -> list[dict]:
    return pq.read_table(path).to_pylist()
