"""Listing the files of a photo source.

A source is
- a folder: a local path, file://, or a prefix of any fsspec filesystem (s3://bucket/photos,
  gs://..., memory://...), searched recursively;
- a list file: a .txt file with one path or URI per line (blank lines and lines starting with
  "#" skipped), or a .parquet file with a string column `uri`. The list file itself may be local
  or remote; a relative entry is relative to the list file's folder.

Every regular file is listed, image or not: deciding what is a usable photo is ingest's job,
which records a reason for each file it leaves out instead of dropping it silently.
Local files are listed as paths, remote ones as URIs.
"""

import io
import os
from pathlib import Path

from storage.checkpoints import make_key
from storage.uris import StorageError, filesystem, is_local, join, local_path, protocol_of, read_bytes, storage_error

LIST_SUFFIXES = (".txt", ".parquet")
LIST_COLUMN = "uri"
_LIST_FOLDER_FROM = 20  # list a folder once rather than look up this many of its files


class SourceError(Exception):
    """The source cannot be listed; the message is one line naming the path."""


def is_list_file(source: str) -> bool:
    return str(source).lower().rstrip("/").endswith(LIST_SUFFIXES)


def list_image_files(source: str, storage_options: dict | None = None) -> list[str]:
    """Return the paths (local) or URIs (remote) of all files of `source`, sorted.

    For a folder: `source` joined with the path relative to it, recursively. Hidden files and
    hidden folders (name starting with ".") are skipped: they are OS and tool clutter
    (.DS_Store, .thumbnails), never photos the user meant to give. For a list file: its
    entries, each once.
    """
    return [path for path, _ in _listing(source, storage_options)]


def listing_fingerprint(source: str, storage_options: dict | None = None) -> str:
    """A key that changes when a file of `source` is added, removed, renamed or rewritten.

    Names, sizes and modification times (ETags for object stores): cheap to read, and enough
    to tell an unchanged collection from a changed one without reading every photo.
    """
    return make_key([list(entry) for _, entry in _listing(source, storage_options, with_stamps=True)])


def image_names(root: str, files: list[str]) -> list[str]:
    """The manifest name of each file: its path relative to the source folder `root`,
    "/"-separated; for files not under `root` (a list file's entries), the path relative to
    the deepest folder holding all of them (protocol and bucket included when they differ)."""
    if not is_list_file(root) or _under(root, files):
        if is_local(root):
            base = os.path.abspath(local_path(root))
            names = [Path(os.path.relpath(os.path.abspath(local_path(f)), base)).as_posix() for f in files]
        else:
            prefix = root.rstrip("/") + "/"
            names = [f[len(prefix):] if f.startswith(prefix) else None for f in files]
        if all(n is not None and not n.startswith("../") for n in names):
            return names
    parts = [_key_form(f).split("/") for f in files]
    common = 0
    if parts:
        shortest = min(len(p) for p in parts) - 1  # never the file name itself
        while common < shortest and all(p[common] == parts[0][common] for p in parts):
            common += 1
    return ["/".join(p[common:]) for p in parts]


def _under(root: str, files: list[str]) -> bool:
    prefix = root.rstrip("/") + "/"
    return all(str(f).startswith(prefix) for f in files)


def _key_form(file: str) -> str:
    """"s3/bucket/a/b.jpg" for s3://bucket/a/b.jpg, "home/me/a.jpg" for /home/me/a.jpg."""
    if is_local(file):
        return Path(os.path.abspath(local_path(file))).as_posix().lstrip("/")
    protocol = protocol_of(file)
    return f"{protocol}/" + file.partition("://")[2].lstrip("/")


def _listing(source: str, storage_options: dict | None, with_stamps: bool = False) -> list[tuple]:
    """[(path or URI, fingerprint entry)]; the entry is (name, size, time or ETag), or None
    without `with_stamps`."""
    source = str(source)
    try:
        if is_local(source):
            return _list_local(source, with_stamps, storage_options)
        return _list_remote(source, with_stamps, storage_options)
    except StorageError as error:
        raise SourceError(str(error)) from error


def _list_local(source: str, with_stamps: bool, storage_options: dict | None) -> list[tuple]:
    path = local_path(source)
    if not os.path.exists(path):
        raise SourceError(f"source path does not exist: {source}")
    if not os.path.isdir(path):
        if is_list_file(path):
            return _list_entries(source, read_bytes(path), with_stamps, storage_options)
        raise SourceError(f"source path is a file, not a folder: {source}")

    files = []
    for folder, subfolders, names in os.walk(path):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in names:
            file = os.path.join(folder, name)
            if not name.startswith(".") and os.path.isfile(file):
                files.append(file)
    if not files:
        raise SourceError(f"source folder holds no files: {source}")
    files.sort()
    if not with_stamps:
        return [(f, None) for f in files]
    return [(f, (os.path.relpath(f, path), *_local_stamp(f))) for f in files]


def _local_stamp(path: str) -> tuple[int | None, int | None]:
    try:
        stat = os.stat(path)
    except OSError:
        return None, None  # ingest will say why it cannot be read
    return stat.st_size, stat.st_mtime_ns


def _list_remote(source: str, with_stamps: bool, storage_options: dict | None) -> list[tuple]:
    fs, root = filesystem(source, storage_options)
    root = root.rstrip("/")
    try:
        info = fs.info(root)
    except FileNotFoundError as error:
        bucket = " (no such bucket)" if "bucket" in str(error).lower() else ""
        raise SourceError(f"source path does not exist: {source}{bucket}") from None
    except Exception as error:
        raise storage_error(source, "list", error) from error
    if info.get("type") != "directory":
        if is_list_file(source):
            return _list_entries(source, read_bytes(source, storage_options), with_stamps, storage_options)
        raise SourceError(f"source path is a file, not a folder: {source}")
    try:
        found = fs.find(root, detail=True)
    except Exception as error:
        raise storage_error(source, "list", error) from error
    entries = []
    for path, detail in sorted(found.items()):
        relative = path[len(root):].lstrip("/")
        if detail.get("type", "file") != "file" or not relative:
            continue
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        entries.append((join(source, relative), (relative, detail.get("size"), _remote_stamp(detail))))
    if not entries:
        raise SourceError(f"source folder holds no files: {source}")
    return entries


def _remote_stamp(info: dict) -> str | None:
    for field in ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "updated", "created"):
        if info.get(field) is not None:
            return str(info[field])
    return None


def _list_entries(source: str, data: bytes, with_stamps: bool, storage_options: dict | None) -> list[tuple]:
    """The files a list file names, resolved, sorted, each once."""
    if str(source).lower().endswith(".parquet"):
        entries = _parquet_entries(source, data)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SourceError(f"list file is not UTF-8 text: {source}") from None
        entries = [line.strip() for line in text.splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
    folder = _parent(source)
    files, seen = [], set()
    for entry in entries:
        if protocol_of(entry) is None and not os.path.isabs(entry):
            entry = join(folder, entry)
        elif is_local(entry):
            entry = local_path(entry)
        key = _key_form(entry)
        if key not in seen:
            seen.add(key)
            files.append(entry)
    if not files:
        raise SourceError(f"list file names no files: {source}")
    files.sort()
    if not with_stamps:
        return [(f, None) for f in files]
    stamps = _stamps(files, storage_options)
    return [(f, (f, *stamps[f])) for f in files]


def _parquet_entries(source: str, data: bytes) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as error:
        raise SourceError(f"list file is not a Parquet file: {source} ({' '.join(str(error).split())})") from None
    if LIST_COLUMN not in table.column_names:
        raise SourceError(f"list file has no '{LIST_COLUMN}' column: {source}")
    return [str(v).strip() for v in table.column(LIST_COLUMN).to_pylist() if v is not None and str(v).strip()]


def _parent(source: str) -> str:
    if is_local(source):
        return os.path.dirname(os.path.abspath(local_path(source)))
    return source.rstrip("/").rsplit("/", 1)[0]


def _stamps(files: list[str], storage_options: dict | None) -> dict[str, tuple]:
    """{file: (size, mtime or ETag)} of listed files; (None, None) for one that cannot be read
    (ingest records why). Remote files are looked up one folder listing at a time where a
    folder holds many of them, one by one otherwise."""
    stamps = {f: _local_stamp(f) for f in files if is_local(f)}
    by_folder: dict[str, list[str]] = {}
    for file in files:
        if not is_local(file):
            by_folder.setdefault(_parent(file), []).append(file)
    for folder, members in by_folder.items():
        fs, _ = filesystem(folder, storage_options)
        listed = {}
        if len(members) >= _LIST_FOLDER_FROM:
            try:
                listed = {fs._strip_protocol(d["name"]).rstrip("/"): d for d in fs.ls(fs._strip_protocol(folder), detail=True)}
            except OSError:
                listed = {}
            except Exception as error:
                raise storage_error(folder, "list", error) from error
        for file in members:
            path = fs._strip_protocol(file).rstrip("/")
            try:
                info = listed.get(path) or fs.info(path)
            except OSError:
                stamps[file] = (None, None)
                continue
            except Exception as error:
                raise storage_error(file, "read", error) from error
            stamps[file] = (info.get("size"), _remote_stamp(info))
    return stamps
