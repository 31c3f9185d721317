"""Transient failures are retried by the Prefect task; permanent ones fail at once."""
from prefect import flow, task

from flows.retries import is_transient, retry_transient


def test_transient_and_permanent_errors():
    assert is_transient(ConnectionResetError("peer reset"))
    assert is_transient(TimeoutError("slow bucket"))
    assert is_transient(OSError(5, "I/O error"))
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(PermissionError("denied"))
    assert not is_transient(ValueError("bad settings"))


def test_a_flaky_task_is_retried_and_a_broken_one_is_not(prefect_api):
    calls = {"flaky": 0, "broken": 0}

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionResetError("storage hiccup")
        return "done"

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def broken():
        calls["broken"] += 1
        raise FileNotFoundError("photo.jpg is gone")

    @flow
    def run_both():
        return flaky(), broken(return_state=True)

    result, broken_state = run_both()
    assert result == "done" and calls["flaky"] == 3
    assert broken_state.is_failed() and calls["broken"] == 1
