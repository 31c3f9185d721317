"""Wraps a stage so that it is skipped when its checkpoint key is unchanged."""
import time
from importlib.metadata import version

from flows.layout import OutputLayout
from flows.settings import Settings
from storage.checkpoints import CheckpointStore, make_key

CODE_VERSION = version("landmark-sfm")


def checkpointed(stage: str, setting_names: tuple[str, ...] = ()):
    """Decorate `fn(layout, settings, upstream_key, *args) -> report`.

    The stage's key covers the upstream key, the named settings and the code version. The
    returned report carries `status` ("ran" or "reused"), `seconds` and `key`.
    """
    def decorate(fn):
        # No functools.wraps: Prefect reads the parameters from the signature, and this one
        # has upstream_key in front of the stage's own extra arguments.
        def run(layout: OutputLayout, settings: Settings, upstream_key: str, *args):
            started = time.perf_counter()
            key = make_key(stage, upstream_key, {n: getattr(settings, n) for n in setting_names}, CODE_VERSION)
            store = CheckpointStore(layout.root)
            saved = store.find(stage, key)
            if saved is not None:
                return {**saved, "status": "reused", "seconds": round(time.perf_counter() - started, 3), "key": key}
            report = {"status": "ran", **fn(layout, settings, *args)}
            report.update(seconds=round(time.perf_counter() - started, 3), key=key)
            store.commit(stage, key, report)
            return report
        run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        return run
    return decorate
