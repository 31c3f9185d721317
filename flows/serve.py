"""`landmark-sfm serve`: one process that registers the reconstruction as a deployment with
a cron schedule on a Prefect server and runs its scheduled and triggered runs itself.

For several machines, use deployments/prefect.yaml with a work pool and workers instead
(README: running it as a service).
"""
import argparse
import sys
from pathlib import Path

DEFAULT_CRON = "0 2 * * *"  # every night at 02:00
DEFAULT_NAME = "nightly"
DEFAULT_TIMEZONE = "UTC"


class ServeError(Exception):
    """The deployment cannot be served as asked."""


def api_url() -> str | None:
    """The Prefect API this process talks to (environment or profile), None if none is set."""
    from prefect.settings import get_current_settings
    return get_current_settings().api.url


def _is_uri(location: str) -> bool:
    return "://" in str(location)


def _absolute(location: str) -> str:
    """A local folder as an absolute path (runs may start elsewhere); a URI unchanged."""
    return str(location) if _is_uri(location) else str(Path(location).resolve())


def serve_reconstruction(source: str, out: str, cron: str = DEFAULT_CRON, name: str = DEFAULT_NAME,
                         timezone: str = DEFAULT_TIMEZONE, limit: int = 1, **settings) -> None:
    """Serve the flow as deployment 'reconstruct/<name>', run on `cron` (in `timezone`) with
    source and out as its default parameters (a run may override them), and execute its runs
    in this process, at most `limit` at a time, until interrupted. `settings`: the flow's other
    parameters (max_image_size, max_features, camera_model, shared_cameras, bundle_adjuster, device, chunk_size,
    dask_address).

    Needs a Prefect server (PREFECT_API_URL): a temporary one would vanish with its schedule."""
    if not api_url():
        raise ServeError("serve needs a Prefect server to keep the schedule: start one with "
                         "`prefect server start` and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
    if not _is_uri(source) and not Path(source).exists():
        raise ServeError(f"source does not exist: {source}")
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron
    try:
        ZoneInfo(timezone)
        schedule = Cron(cron, timezone=timezone)
    except (ValueError, ZoneInfoNotFoundError) as error:
        raise ServeError(f"bad schedule '{cron}' ({timezone}): {error}") from None

    from flows.reconstruct import reconstruct
    parameters = {"source": _absolute(source), "out": _absolute(out), **settings}
    reconstruct.serve(
        name=name,
        schedules=[schedule],
        parameters=parameters,
        limit=limit,
        tags=["landmark-sfm"],
        description=f"Reconstruct {parameters['source']} into {parameters['out']} on '{cron}' ({timezone}).",
        # Runs import flows.reconstruct from the installed package, whatever the working directory.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder of photos (or what `landmark-sfm run` takes as its source)")
    parser.add_argument("--out", required=True, help="output folder (or what `landmark-sfm run` takes as --out)")
    parser.add_argument("--cron", default=DEFAULT_CRON, help="when to run, a cron expression (default '%(default)s')")
    parser.add_argument("--timezone", default=DEFAULT_TIMEZONE, help="time zone of the cron expression (default %(default)s)")
    parser.add_argument("--name", default=DEFAULT_NAME, help="deployment name: runs are reconstruct/<name> (default %(default)s)")


def serve_from_args(args, flow_kwargs: dict) -> int:
    try:
        serve_reconstruction(args.source, args.out, cron=args.cron, name=args.name, timezone=args.timezone,
                             **flow_kwargs)
    except ServeError as error:
        print(f"landmark-sfm: error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.serve`: the same as `landmark-sfm serve`."""
    from flows.cli import _add_settings, _flow_kwargs
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__)
    add_serve_arguments(parser)
    _add_settings(parser)
    args = parser.parse_args(argv)
    return serve_from_args(args, _flow_kwargs(args))


if __name__ == "__main__":
    sys.exit(main())
