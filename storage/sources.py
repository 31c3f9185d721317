"""Listing the files of a photo source.

A source is a local folder for now; cloud URIs will slot in behind the same
function via fsspec. Every regular file is listed, image or not: deciding
what is a usable photo is ingest's job, which records a reason for each
file it leaves out instead of dropping it silently.
"""

import os

from storage.checkpoints import make_key


class SourceError(Exception):
    """The source cannot be listed; the message is one line naming the path."""


def list_image_files(source: str) -> list[str]:
    """Return the paths of all files under `source`, recursively, sorted.

    Paths are `source` joined with the path relative to it. Hidden files and
    hidden folders (name starting with ".") are skipped: they are OS and tool
    clutter (.DS_Store, .thumbnails), never photos the user meant to give.
    """
    if not os.path.exists(source):
        raise SourceError(f"source path does not exist: {source}")
    if not os.path.isdir(source):
        raise SourceError(f"source path is a file, not a folder: {source}")

    files = []
    for folder, subfolders, names in os.walk(source):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in names:
            path = os.path.join(folder, name)
            if not name.startswith(".") and os.path.isfile(path):
                files.append(path)

    if not files:
        raise SourceError(f"source folder holds no files: {source}")
    return sorted(files)


def listing_fingerprint(source: str) -> str:
    """A key that changes when a file of `source` is added, removed, renamed or rewritten.

    Names, sizes and modification times: cheap to read, and enough to tell an unchanged
    collection from a changed one without reading every photo.
    """
    entries = []
    for path in list_image_files(source):
        stat = os.stat(path)
        entries.append((os.path.relpath(path, source), stat.st_size, stat.st_mtime_ns))
    return make_key(entries)
