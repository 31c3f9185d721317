"""Where each stage writes under the output folder."""
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutputLayout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def features(self) -> Path:
        return self.root / "features.zarr"

    @property
    def pairs(self) -> Path:
        return self.root / "pairs.parquet"

    @property
    def chunks(self) -> Path:
        return self.root / "chunks.parquet"

    @property
    def tracks(self) -> Path:
        return self.root / "tracks.zarr"

    @property
    def chunk_models(self) -> Path:
        """Each chunk's refined models, in the collection's image ids: models/chunk-<k>/<i>/."""
        return self.root / "models"

    def stage_models(self, stage: str) -> Path:
        """Intermediate models of the geometry stages: stages/<stage>/[chunk-<k>/]<component>/."""
        return self.root / "stages" / stage

    @property
    def sparse(self) -> Path:
        return self.root / "sparse"

    @property
    def ply(self) -> Path:
        return self.root / "points.ply"

    @property
    def stage_table(self) -> Path:
        return self.root / "stages.parquet"

    @property
    def report(self) -> Path:
        return self.root / "report.json"


def chunk_name(chunk) -> str:
    """The name of a chunk (sfm_core.chunking.Chunk) in folders, Zarr groups and checkpoints."""
    return f"chunk-{chunk.index}"
