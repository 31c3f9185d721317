"""Shared fixtures: the real photo sets beside the checkout, and one Prefect API per session."""
import os
from pathlib import Path

import pytest

import flows  # noqa: F401  (applies the environment defaults before Prefect is imported)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_set(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "images").is_dir():
        pytest.skip(f"real photo set not found: {path}")
    return path


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect server and database for the flow tests of this session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])):
        yield
