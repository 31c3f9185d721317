"""Atomic publication: outputs are written aside, then renamed into place in one step,
so a reader (or a resumed run) never sees half of one."""
import contextlib
import os
import shutil
import uuid


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary sibling path to write a file or folder to; publishes it on success."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
