"""Stage checkpoints: a stage's outputs are reused when its key is unchanged.

A key is a hash of everything a stage's output depends on: the key of the stage before it
(so a change anywhere upstream reaches every later stage), the settings the stage reads, and
the code version. A stage commits `checkpoints/<stage>.json` = {key, report} only after all
its outputs are published, so a run killed in the middle of a stage leaves no checkpoint
for it and a re-run redoes exactly that stage and the ones after it.
"""
import hashlib
import json
from pathlib import Path

from storage.atomic import atomic_path


def make_key(*parts) -> str:
    """sha256 of the JSON of `parts` (anything json.dumps takes, with sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class CheckpointStore:
    def __init__(self, root: Path):
        self.folder = Path(root) / "checkpoints"

    def _path(self, stage: str) -> Path:
        return self.folder / f"{stage}.json"

    def find(self, stage: str, key: str) -> dict | None:
        """The report the stage committed under `key`, or None."""
        path = self._path(stage)
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return saved["report"] if saved.get("key") == key else None

    def commit(self, stage: str, key: str, report: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(str(self._path(stage))) as tmp:
            Path(tmp).write_text(json.dumps({"key": key, "report": report}, indent=2))
