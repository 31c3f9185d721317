"""Local paths and remote URIs through fsspec: reading, listing, and mirroring an output prefix.

A URI is anything fsspec opens: a local path, file://, s3:// (s3fs), gs:// (gcsfs), memory://
(tests). Credentials and endpoints come from the usual places (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, ...) plus `storage_options`,
a dict passed to the filesystem: either options for every URI ({"endpoint_url": ...}) or one
dict per protocol ({"s3": {...}, "gs": {...}}), chosen by the URI's protocol.

The pipeline's stages work on a local folder; a remote output is mirrored: `sync_down` at the
start of a run (so its checkpoints are found and a killed run resumes), `sync_up` after each
stage commits. Within one `sync_up` the checkpoint files go last (and a checkpoint about to
change is deleted first), so the remote never holds a checkpoint whose outputs are missing.

Every failure is a StorageError whose message is one line naming the URI and the reason.
"""
import json
import os
import re
import threading
from pathlib import Path

from storage.atomic import atomic_path

CHECKPOINT_FOLDER = "checkpoints"
SYNC_STATE = ".sync-state.json"  # in the local mirror: what it last exchanged with the remote
# What this module never copies: hidden files (the sync state, a manifest being written) and
# the leftovers of storage.atomic.atomic_path in a killed run.
_TEMP_NAME = re.compile(r"\.tmp-[0-9a-f]{8}$")
# Environment variables that change what a filesystem object connects to, or as whom.
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCSFS_", "FSSPEC_")


class StorageError(Exception):
    """A URI cannot be read, listed or written. `kind` is one of "not-found", "permission",
    "credentials", "connection", "unsupported", "other"."""

    def __init__(self, uri: str, action: str, kind: str, reason: str):
        super().__init__(" ".join(f"cannot {action} {uri}: {reason}".split()))
        self.uri, self.action, self.kind, self.reason = uri, action, kind, reason


def protocol_of(uri: str) -> str | None:
    """"s3" for s3://bucket/key, None for a plain path."""
    head, sep, _ = str(uri).partition("://")
    return head.lower() if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head) else None


def is_local(uri: str) -> bool:
    return protocol_of(uri) in (None, "file", "local")


def local_path(uri: str) -> str:
    """The path of a local URI (file:///a/b -> /a/b); a plain path unchanged."""
    uri = str(uri)
    if protocol_of(uri) in ("file", "local"):
        return uri.partition("://")[2]
    return uri


def join(base: str, relative: str) -> str:
    """`relative` ("a/b.jpg") under a folder URI or path."""
    if is_local(base):
        return os.path.join(local_path(base), *relative.split("/"))
    return base.rstrip("/") + "/" + relative


def options_for(uri: str, storage_options: dict | None) -> dict:
    """The options of `uri`'s filesystem: storage_options[protocol] when that is a dict, else all."""
    options = storage_options or {}
    chosen = options.get(protocol_of(uri) or "file")
    return dict(chosen) if isinstance(chosen, dict) else dict(options)


_filesystems: dict = {}
_filesystems_lock = threading.Lock()


def filesystem(uri: str, storage_options: dict | None = None):
    """(fsspec filesystem, path inside it) for `uri`.

    Filesystems are cached per protocol, options and credential environment (fsspec's own
    cache ignores the environment, so it would keep using an old endpoint or key)."""
    import fsspec.core

    options = options_for(uri, storage_options)
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    cache_key = (protocol_of(uri), json.dumps(options, sort_keys=True, default=str), env)
    try:
        with _filesystems_lock:
            fs = _filesystems.get(cache_key)
        if fs is not None:
            return fs, fs._strip_protocol(uri)
        fs, path = fsspec.core.url_to_fs(uri, skip_instance_cache=True, **options)
    except Exception as error:
        raise storage_error(uri, "open", error) from error
    with _filesystems_lock:
        _filesystems[cache_key] = fs
    return fs, path


def read_bytes(uri: str, storage_options: dict | None = None) -> bytes:
    """All bytes of the file at `uri` (a path or any fsspec URI)."""
    if is_local(uri):
        path = local_path(uri)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as error:
            raise storage_error(uri, "read", error) from error
    fs, path = filesystem(uri, storage_options)
    try:
        return fs.cat_file(path)
    except Exception as error:
        raise storage_error(uri, "read", error) from error


def storage_error(uri: str, action: str, error: BaseException) -> StorageError:
    """`error`, raised while doing `action` on `uri`, as a one-line StorageError."""
    if isinstance(error, StorageError):
        return error
    kind, reason = _classify(error)
    return StorageError(str(uri), action, kind, reason)


def _classify(error: BaseException) -> tuple[str, str]:
    chain, seen = [], error
    while seen is not None and len(chain) < 8:  # the error and what caused it
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    message = _message(error)
    codes = {str(getattr(e, "response", {}).get("Error", {}).get("Code", "")) for e in chain
             if isinstance(getattr(e, "response", None), dict)}
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                "NoAuthTokenError", "DefaultCredentialsError", "RefreshError"}:
        return "credentials", (f"no usable credentials ({message}); set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS), "
                               "or pass them in --storage-options")
    if any(isinstance(e, PermissionError) for e in chain) or codes & {
            "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}:
        return "permission", f"access denied ({message}); check the credentials and their permissions"
    if any(isinstance(e, FileNotFoundError) for e in chain) or codes & {"404", "NoSuchBucket", "NoSuchKey"}:
        # s3fs's message is the path itself, or says that the bucket is missing.
        return "not-found", "does not exist" + (f" ({message})" if "bucket" in message.lower() else "")
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                "ClientConnectorError", "ServerDisconnectedError", "ConnectionError", "TimeoutError"}:
        return "connection", f"cannot reach the storage endpoint ({message})"
    if isinstance(error, ImportError) or "protocol not known" in message.lower():
        return "unsupported", f"no filesystem for this URI ({message})"
    if isinstance(error, IsADirectoryError):
        return "other", "is a folder, not a file"
    return "other", f"{type(error).__name__}: {message}"


def _message(error: BaseException, limit: int = 300) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    message = " ".join(str(error).split()) or type(error).__name__
    return message if len(message) <= limit else message[:limit - 3] + "..."


# ---------------------------------------------------------------------------- mirroring


def _copied(relative: str) -> bool:
    return not any(part.startswith(".") or _TEMP_NAME.search(part) for part in relative.split("/"))


def _local_files(local_dir: Path, scope: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """{relative posix path: (size, mtime_ns)} of the files under local_dir (within scope)."""
    files = {}
    for folder, subfolders, names in os.walk(local_dir):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in names:
            path = os.path.join(folder, name)
            relative = Path(os.path.relpath(path, local_dir)).as_posix()
            if _copied(relative) and _in_scope(relative, scope):
                stat = os.stat(path)
                files[relative] = (stat.st_size, stat.st_mtime_ns)
    return files


def _in_scope(relative: str, scope: list[str] | None) -> bool:
    return scope is None or any(relative == p or relative.startswith(p + "/") for p in scope)


def _stamp(info: dict) -> str:
    """What changes when a remote file is rewritten: its ETag or hash, else its time."""
    for field in ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "last_modified",
                  "updated", "created"):
        if info.get(field) is not None:
            return str(info[field])
    return ""


def _remote_files(fs, root: str, uri: str) -> dict[str, tuple[int, str]]:
    """{relative path: (size, stamp)} of the files under the remote prefix; {} when it is new."""
    try:
        fs.invalidate_cache(root)
        found = fs.find(root, detail=True)  # a missing bucket raises; a missing prefix is empty
    except Exception as error:
        raise storage_error(uri, "list", error) from error
    files = {}
    for path, info in found.items():
        relative = path[len(root):].lstrip("/")
        if info.get("type", "file") == "file" and relative and _copied(relative):
            files[relative] = (int(info.get("size") or 0), _stamp(info))
    return files


class _SyncState:
    """{relative: [local size, local mtime_ns, remote stamp]} of the files known to be equal on
    both sides, kept in local_dir/.sync-state.json for one remote."""

    def __init__(self, local_dir: Path, remote: str):
        self.path, self.remote = local_dir / SYNC_STATE, remote
        self.files = {}
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
                if saved.get("remote") == remote:
                    self.files = {k: tuple(v) for k, v in saved["files"].items()}
            except (ValueError, KeyError, TypeError):
                self.files = {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(str(self.path)) as tmp:
            Path(tmp).write_text(json.dumps({"remote": self.remote, "files": self.files}))


def sync_down(uri: str, local_dir, storage_options: dict | None = None) -> dict:
    """Make local_dir a copy of everything under the remote prefix `uri`.

    Files already equal (the same remote size and ETag as when last copied, the local file
    untouched since) are skipped; local files the remote does not hold are removed. A prefix
    with nothing under it is a new output: local_dir is emptied. A missing bucket, missing
    credentials or an unreachable endpoint raise StorageError.
    Returns {"downloaded": n, "unchanged": n, "removed": n}.
    """
    local_dir = Path(local_dir)
    fs, root = filesystem(uri, storage_options)
    root = root.rstrip("/")
    remote = _remote_files(fs, root, uri)
    state = _SyncState(local_dir, uri)
    local = _local_files(local_dir) if local_dir.is_dir() else {}

    removed = [r for r in local if r not in remote]
    for relative in removed:
        os.remove(local_dir / relative)
        state.files.pop(relative, None)
    fetch = sorted(r for r in remote
                   if state.files.get(r) != (*local.get(r, (None, None)), remote[r][1]))
    for relative in fetch:
        state.files.pop(relative, None)
        (local_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    if fetch:
        try:
            fs.get([f"{root}/{r}" for r in fetch], [str(local_dir / r) for r in fetch])
        except Exception as error:
            raise storage_error(uri, "download from", error) from error
    for relative in fetch:
        stat = os.stat(local_dir / relative)
        state.files[relative] = (stat.st_size, stat.st_mtime_ns, remote[relative][1])
    local_dir.mkdir(parents=True, exist_ok=True)
    state.save()
    return {"downloaded": len(fetch), "unchanged": len(remote) - len(fetch), "removed": len(removed)}


def sync_up(local_dir, uri: str, storage_options: dict | None = None, paths: list[str] | None = None) -> dict:
    """Upload what changed in local_dir since the last sync to the remote prefix `uri`.

    A file is uploaded when its size or modification time differs from when it was last
    synced (or it was never synced); a synced file removed locally is deleted remotely.
    `paths` (relative files or folders) limits the work to those. Order: the remote copies
    of checkpoints about to change are deleted, then the other files uploaded and deleted,
    then the checkpoints uploaded: a remote checkpoint never describes outputs that are
    not (yet) there. Returns {"uploaded": n, "deleted": n, "unchanged": n}.
    """
    local_dir = Path(local_dir)
    fs, root = filesystem(uri, storage_options)
    root = root.rstrip("/")
    state = _SyncState(local_dir, uri)
    local = _local_files(local_dir, paths)
    changed = sorted(r for r in local if state.files.get(r, (None, None))[:2] != local[r])
    gone = sorted(r for r in state.files if r not in local and _in_scope(r, paths))

    def is_checkpoint(relative):
        return relative.startswith(CHECKPOINT_FOLDER + "/")

    def upload(relatives):
        if relatives:
            fs.put([str(local_dir / r) for r in relatives], [f"{root}/{r}" for r in relatives])

    def delete(relatives):
        if relatives:
            fs.rm([f"{root}/{r}" for r in relatives])

    try:
        delete([r for r in changed + gone if is_checkpoint(r) and r in state.files])
        for relative in gone:
            state.files.pop(relative)
        upload([r for r in changed if not is_checkpoint(r)])
        delete([r for r in gone if not is_checkpoint(r)])
        upload([r for r in changed if is_checkpoint(r)])
        if changed:
            fs.invalidate_cache(root)
            stamps = {path[len(root):].lstrip("/"): _stamp(info)
                      for path, info in fs.find(root, detail=True).items()}
    except Exception as error:
        state.save()  # what was deleted is forgotten; the uploads are redone next time
        raise storage_error(uri, "upload to", error) from error
    for relative in changed:
        state.files[relative] = (*local[relative], stamps.get(relative, ""))
    state.save()
    return {"uploaded": len(changed), "deleted": len(gone), "unchanged": len(local) - len(changed)}
