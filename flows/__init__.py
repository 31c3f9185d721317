"""Prefect flows and tasks of landmark-sfm."""
from flows.environment import apply_defaults

apply_defaults()

# torch before pycolmap, in every process that runs the flow or its tasks: with torch 2.14.1
# loaded after pycolmap 4.2.1, a run aborted in its features stage with heap corruption
# ("free(): invalid pointer", "malloc assertion failure"); loaded first, it ran clean.
import torch  # noqa: E402,F401
