"""Shared fixtures: the real photo sets beside the checkout, and one Prefect API per session."""
import os
import shutil
from pathlib import Path

import pytest

import flows  # noqa: F401  (applies the environment defaults before Prefect is imported)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_set(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "images").is_dir():
        pytest.skip(f"real photo set not found: {path}")
    return path


def without_chunk_checkpoints(done: Path, copy: Path) -> Path:
    """A copy of a finished output folder in which only the collection-wide stages before the
    chunks (ingest to chunking) are done: the chunks, the merge and the export run again."""
    shutil.copytree(done, copy)
    shutil.rmtree(copy / "checkpoints" / "results")  # Prefect's cache of every stage
    for checkpoint in (copy / "checkpoints").iterdir():
        if checkpoint.stem not in ("ingest", "features", "matching", "chunking"):
            checkpoint.unlink()
    return copy


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect server and database for the flow tests of this session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])):
        yield
