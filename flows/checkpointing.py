"""Stages as checkpointed Prefect tasks.

A stage is skipped when its checkpoint key is unchanged. The key covers the key of the stage
before it, the settings the stage reads, the chunk it works on (per-chunk stages) and the code
version. The same key is the stage's Prefect cache key, with its result persisted under the
output folder (`checkpoints/results/`): the Prefect UI shows a re-run's reused stages as
Cached, and losing Prefect's database loses no work, because both the results and our own
checkpoints live beside the outputs.
"""
import contextlib
import inspect
import time
from contextvars import ContextVar
from importlib.metadata import version
from pathlib import Path

from prefect import get_run_logger, task

from flows.layout import OutputLayout, chunk_name
from flows.retries import RETRY_DELAYS_S, retry_transient
from flows.settings import Settings
from storage.checkpoints import CheckpointStore, make_key

CODE_VERSION = version("landmark-sfm")
RETRY = {"retries": len(RETRY_DELAYS_S), "retry_delay_seconds": RETRY_DELAYS_S, "retry_condition_fn": retry_transient}
_stage_started: ContextVar[float | None] = ContextVar("stage_started", default=None)


def stage_seconds() -> float | None:
    """Seconds since the stage running in this context began; None outside a stage."""
    started = _stage_started.get()
    return None if started is None else time.perf_counter() - started


@contextlib.contextmanager
def _stage_clock(started: float):
    """stage_seconds() counts from `started` inside. A module function, not inline code in
    the stage's closure: Dask pickles that closure with what it names, and a ContextVar
    cannot be pickled."""
    token = _stage_started.set(started)
    try:
        yield
    finally:
        _stage_started.reset(token)


def upstream_key(upstream: str | dict) -> str:
    """The key of the stage before: given as the key itself or as that stage's report."""
    return upstream if isinstance(upstream, str) else upstream["key"]


def stage_key(stage: str, setting_names: tuple[str, ...], settings: Settings, upstream: str | dict,
              chunk=None) -> str:
    return make_key(stage, upstream_key(upstream), {n: getattr(settings, n) for n in setting_names},
                    CODE_VERSION, None if chunk is None else chunk_name(chunk))


def checkpoint_name(stage: str, chunk=None) -> str:
    return stage if chunk is None else f"{stage}-{chunk_name(chunk)}"


def checkpointed(stage: str, setting_names: tuple[str, ...] = ()):
    """Decorate `fn(layout, settings, ...) -> report` into `run(layout, settings, upstream, ...)`.

    A per-chunk stage has a parameter named `chunk` (an sfm_core.chunking.Chunk).
    The returned report carries `status` ("ran" or "reused"), `seconds` and `key`.
    """
    def decorate(fn):
        own = inspect.signature(fn)
        params = list(own.parameters.values())
        upstream_param = inspect.Parameter("upstream", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str | dict)
        signature = own.replace(parameters=params[:2] + [upstream_param] + params[2:])

        def run(*args, **kwargs):
            started = time.perf_counter()
            arguments = signature.bind(*args, **kwargs).arguments
            layout, settings, upstream = arguments.pop("layout"), arguments["settings"], arguments.pop("upstream")
            chunk = arguments.get("chunk")
            key = stage_key(stage, setting_names, settings, upstream, chunk)
            store = CheckpointStore(layout.root)
            name = checkpoint_name(stage, chunk)
            saved = store.find(name, key)
            if saved is not None:
                return {**saved, "status": "reused", "seconds": round(time.perf_counter() - started, 3), "key": key}
            with _stage_clock(started):  # its end-of-stage line reports these seconds
                report = {"status": "ran", **fn(layout, **arguments)}
            report.update(seconds=round(time.perf_counter() - started, 3), key=key)
            store.commit(name, key, report)
            return report
        # Prefect reads the parameters from the signature: the stage's own, with `upstream`
        # after `settings`.
        run.__signature__ = signature
        run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        return run
    return decorate


def stage_task(stage: str, setting_names: tuple[str, ...] = (), run_name: str | None = None):
    """A checkpointed stage as a Prefect task whose cache key is the checkpoint key.

    run_name: the task run's name, a template over the parameters (e.g. "cameras-chunk-{chunk.index}").
    """
    def cache_key(context, parameters) -> str:
        return stage_key(stage, setting_names, parameters["settings"], parameters["upstream"],
                         parameters.get("chunk"))

    def decorate(fn):
        return task(name=stage, task_run_name=run_name or stage, cache_key_fn=cache_key,
                    persist_result=True, result_serializer="json", **RETRY)(checkpointed(stage, setting_names)(fn))
    return decorate


def results_storage(layout: OutputLayout) -> Path:
    """Where Prefect persists the stages' results (its cache) for this output folder."""
    return layout.root / "checkpoints" / "results"


def run_stage(stage_fn, layout: OutputLayout, settings: Settings, upstream: str | dict, *args) -> dict:
    """Call a stage task in the flow and return its report; a Prefect cache hit is `reused`."""
    started = time.perf_counter()
    state = stage_fn.with_options(result_storage=results_storage(layout))(
        layout, settings, upstream, *args, return_state=True)
    report = report_of(state, time.perf_counter() - started)
    if report["status"] == "reused":  # the stage's own line is not logged: it did not run
        get_run_logger().info("%s: reused from an earlier run (%.1f s)", stage_fn.name, report["seconds"])
    return report


def report_of(state, seconds: float = 0.0) -> dict:
    """The report of a finished stage task; a Prefect cache hit is `reused`, taking `seconds`."""
    report = state.result()
    if state.name == "Cached":
        report = {**report, "status": "reused", "seconds": round(seconds, 3)}
    return report
