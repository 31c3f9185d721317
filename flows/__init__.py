"""Prefect flows and tasks of landmark-sfm."""
from flows.environment import apply_defaults

apply_defaults()
