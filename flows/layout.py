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
    def tracks(self) -> Path:
        return self.root / "tracks.zarr"

    def stage_models(self, stage: str) -> Path:
        """Intermediate models of the geometry stages: stages/<stage>/<component>/."""
        return self.root / "stages" / stage

    @property
    def sparse(self) -> Path:
        return self.root / "sparse"

    @property
    def ply(self) -> Path:
        return self.root / "points.ply"

    @property
    def report(self) -> Path:
        return self.root / "report.json"
