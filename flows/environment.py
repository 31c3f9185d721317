"""Environment defaults this project needs, applied before Prefect or pycolmap is imported.

Without PREFECT_API_URL, Prefect starts a temporary local server: on 2 cores it takes
20-45 s to start (its default 20 s timeout fails on a fresh database), and by default it
tries to reach the network for analytics. A user's own values always win.

COLMAP and Ceres log through glog, in C++ lines (`I20261202 07:01:02.123456 12345
bundle_adjustment.cc:46] ...`) that would bury the one line per stage that the tasks log
and that name no file a user knows. glog reads GLOG_minloglevel when pycolmap is loaded, in
this process and in every process it starts (feature extraction, Dask workers, which also
get it in their cluster's env), so by default only its errors print. Keeping it so needs
one more thing, done in sfm_core.bundle_adjustment: no call to pycolmap's pipeline
functions (pycolmap.bundle_adjustment and the like), which build a COLMAP OptionManager that
resets glog to INFO for the whole process. `--verbose` (set_verbose) brings its lines back.
"""
import os
import sys

GLOG_ERRORS_ONLY, GLOG_EVERYTHING = "2", "0"  # glog severities: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL

DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    "GLOG_minloglevel": GLOG_ERRORS_ONLY,
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def set_verbose() -> None:
    """COLMAP's and Ceres's own log lines, INFO included, in this process and the ones it
    starts from now on (`--verbose`): overrides a GLOG_minloglevel set before."""
    os.environ["GLOG_minloglevel"] = GLOG_EVERYTHING
    if "pycolmap" in sys.modules:  # loaded already: glog has read the environment
        sys.modules["pycolmap"].logging.minloglevel = int(GLOG_EVERYTHING)
