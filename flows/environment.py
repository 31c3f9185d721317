"""Environment defaults this project needs, applied before Prefect or pycolmap is imported.

Without PREFECT_API_URL, Prefect starts a temporary local server: on 2 cores it takes
20-45 s to start (its default 20 s timeout fails on a fresh database), and by default it
tries to reach the network for analytics. COLMAP's INFO lines (glog) would bury the one
line per stage that the tasks log. A user's own values always win.
"""
import os

DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    "GLOG_minloglevel": "1",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
