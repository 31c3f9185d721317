"""Which task failures are worth retrying.

Transient: the storage or the network hiccuped (a timeout, a reset connection, a lost Dask
worker). Permanent: the input is bad or missing; retrying would only fail again, so the
failure is reported at once. Undecodable photos never reach this point: ingest records them
in the manifest and the run goes on without them.
"""
from prefect.client.schemas.objects import State, TaskRun

from storage.uris import StorageError

PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
RETRY_DELAYS_S = [2, 10, 30]


def is_transient(error: BaseException) -> bool:
    if isinstance(error, StorageError):
        return error.kind == "connection"
    if isinstance(error, PERMANENT_OS_ERRORS):
        return False
    transient = (OSError, TimeoutError, ConnectionError)
    try:
        from distributed.comm.core import CommClosedError
        transient += (CommClosedError,)
    except ImportError:
        pass
    return isinstance(error, transient)


def retry_transient(task, task_run: TaskRun, state: State) -> bool:
    """Prefect retry_condition_fn: retry only transient failures."""
    try:
        state.result()
    except Exception as error:  # the task's own exception, re-raised by the state
        return is_transient(error)
    return False
