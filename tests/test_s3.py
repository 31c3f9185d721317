"""Photos from and outputs to an S3 bucket, against a real S3-compatible server on 127.0.0.1.

The server is moto's server mode in a process of its own. A test sees it through the standard
variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), as a user's shell would; the fixtures
look at the bucket through boto3 directly, independently of the code under test.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sfm_core.synthetic import render_scene
from storage.images import load_image, probe_image
from storage.manifest import build_manifest, read_manifest
from storage.sources import SourceError, image_names, list_image_files, listing_fingerprint
from storage.synthetic_io import load_package_textures, write_scene
from storage.uris import StorageError, read_bytes, sync_down, sync_up

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "landmark"
KEY, SECRET, REGION = "testing", "testing", "us-east-1"
SERVER_START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: str) -> None:
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10).read()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto in server mode on 127.0.0.1, stopped when the module's tests are done."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as log_file:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=log_file, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1"))
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None, f"moto server exited: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"moto server not up in {SERVER_START_TIMEOUT_S} s"
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def client(s3_server):
    return boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        region_name=REGION)


def keys(client, prefix: str) -> set[str]:
    """The keys under `prefix/`, relative to it."""
    found = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        found.update(o["Key"][len(prefix) + 1:] for o in page.get("Contents", []))
    return found


@pytest.fixture(scope="module")
def scene(client, tmp_path_factory):
    """10 rendered views, on disk and in s3://landmark/scene/images/; a small mixed folder
    (a subfolder, hidden files) in s3://landmark/mixed/."""
    root = tmp_path_factory.mktemp("scene")
    write_scene(render_scene(load_package_textures(), n_cameras=10, image_size=(320, 240), arc_deg=100), root)
    client.create_bucket(Bucket=BUCKET)
    for path in sorted((root / "images").iterdir()):
        client.upload_file(str(path), BUCKET, f"scene/images/{path.name}")
    photo = (root / "images" / "img_000.jpg").read_bytes()
    for key, body in [("mixed/a.jpg", photo), ("mixed/sub/b.jpg", photo), ("mixed/notes.txt", b"hello\n"),
                      ("mixed/.DS_Store", b"\x00"), ("mixed/.thumbnails/t.jpg", photo),
                      ("mixed-other/c.jpg", photo)]:
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return root


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The standard AWS variables pointing at the test server, and nothing else to find
    credentials in (no profile, no instance metadata)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return s3_server


def one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message and message.strip() == message
    return message


# ------------------------------------------------------------------------------ sources


def test_listing_an_s3_prefix(scene, s3_env, client):
    expected = ["s3://landmark/mixed/a.jpg", "s3://landmark/mixed/notes.txt", "s3://landmark/mixed/sub/b.jpg"]
    # Recursive, sorted, hidden files and folders skipped, a sibling prefix (mixed-other) not included.
    assert list_image_files("s3://landmark/mixed") == expected
    assert list_image_files("s3://landmark/mixed/") == expected
    assert image_names("s3://landmark/mixed", expected) == ["a.jpg", "notes.txt", "sub/b.jpg"]

    fingerprint = listing_fingerprint("s3://landmark/mixed")
    assert listing_fingerprint("s3://landmark/mixed/") == fingerprint
    client.put_object(Bucket=BUCKET, Key="mixed/notes.txt", Body=b"HELLO\n")  # same size, new content
    try:
        assert listing_fingerprint("s3://landmark/mixed") != fingerprint
    finally:
        client.put_object(Bucket=BUCKET, Key="mixed/notes.txt", Body=b"hello\n")


def test_list_files_in_text_and_parquet(scene, s3_env, client, tmp_path):
    text = "\n".join(["# photos of the first day", "", "s3://landmark/scene/images/img_003.jpg",
                      "images/img_001.jpg", "  s3://landmark/scene/images/img_001.jpg  ",  # one photo twice
                      "s3://landmark/mixed/sub/b.jpg", ""])
    client.put_object(Bucket=BUCKET, Key="scene/day1.txt", Body=text.encode())
    # A relative entry is relative to the list file's folder; each photo is listed once.
    assert list_image_files("s3://landmark/scene/day1.txt") == [
        "s3://landmark/mixed/sub/b.jpg", "s3://landmark/scene/images/img_001.jpg",
        "s3://landmark/scene/images/img_003.jpg"]

    listed = [f"s3://landmark/scene/images/img_{i:03d}.jpg" for i in (4, 2)] + ["s3://landmark/mixed/sub/b.jpg"]
    local_list = tmp_path / "photos.parquet"
    pq.write_table(pa.table({"uri": listed, "note": ["x", "y", "z"]}), local_list)
    files = list_image_files(str(local_list))
    assert files == sorted(listed)
    # Names are relative to the deepest folder holding every entry: here the bucket.
    assert image_names(str(local_list), files) == ["mixed/sub/b.jpg", "scene/images/img_002.jpg",
                                                   "scene/images/img_004.jpg"]
    fingerprint = listing_fingerprint(str(local_list))
    assert listing_fingerprint(f"file://{local_list}") == fingerprint
    pq.write_table(pa.table({"uri": listed[:2]}), local_list)
    assert listing_fingerprint(str(local_list)) != fingerprint

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"path": listed}), bad)
    with pytest.raises(SourceError, match="no 'uri' column") as e:
        list_image_files(str(bad))
    assert str(bad) in one_line(e.value)


def test_reading_photos_and_the_manifest_through_s3(scene, s3_env):
    uri = "s3://landmark/scene/images/img_002.jpg"
    local = scene / "images" / "img_002.jpg"
    assert read_bytes(uri) == local.read_bytes()

    probe = probe_image(uri)
    assert probe.status == "ok" and (probe.width, probe.height) == (320, 240)
    assert probe.sha256 == probe_image(str(local)).sha256
    remote, on_disk = load_image(uri, 160), load_image(str(local), 160)
    assert remote.pixels.shape == (120, 160, 3) and remote.scale_xy == (2.0, 2.0)
    assert np.array_equal(remote.pixels, on_disk.pixels)

    source = "s3://landmark/scene/images"
    files = list_image_files(source) + ["s3://landmark/scene/images/gone.jpg"]
    rows = {r.name: r for r in build_manifest(source, files)}
    assert sorted(rows) == sorted([p.name for p in (scene / "images").iterdir()] + ["gone.jpg"])
    assert rows["img_002.jpg"].uri == uri and rows["img_002.jpg"].status == "ok"
    assert rows["gone.jpg"].status == "cannot read file (does not exist)"
    assert rows["gone.jpg"].image_id is None


# ------------------------------------------------------------------------------ mirroring


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_sync_up_and_down_round_trip(scene, s3_env, client, tmp_path):
    uri, prefix = "s3://landmark/runs/sync", "runs/sync"
    work = tmp_path / "work"
    files = {"manifest.parquet": b"m" * 100, "features.zarr/ab/zarr.json": b"{}",
             "features.zarr/ab/c/0/0": b"\x01" * 1000, "checkpoints/ingest.json": b'{"key": "1111"}',
             "checkpoints/features.json": b'{"key": "2222"}'}
    for name, data in files.items():
        _write(work / name, data)
    _write(work / ".manifest-x.parquet.tmp", b"being written")  # hidden: never copied
    _write(work / "pairs.parquet.tmp-0123abcd", b"left by a killed run")  # atomic_path leftover

    assert sync_up(work, uri) == {"uploaded": 5, "deleted": 0, "unchanged": 0}
    assert keys(client, prefix) == set(files)
    assert sync_up(work, uri) == {"uploaded": 0, "deleted": 0, "unchanged": 5}

    # A rewritten file goes up again, even at the same size; a removed one is deleted.
    _write(work / "checkpoints/features.json", b'{"key": "3333"}')
    (work / "features.zarr/ab/c/0/0").unlink()
    assert sync_up(work, uri) == {"uploaded": 1, "deleted": 1, "unchanged": 3}
    assert client.get_object(Bucket=BUCKET, Key=f"{prefix}/checkpoints/features.json")["Body"].read() == b'{"key": "3333"}'
    assert "features.zarr/ab/c/0/0" not in keys(client, prefix)

    # Down into a fresh folder: the same files, byte for byte; again: nothing to fetch.
    mirror = tmp_path / "mirror"
    assert sync_down(uri, mirror) == {"downloaded": 4, "unchanged": 0, "removed": 0}
    expected = {n: d for n, d in files.items() if n != "features.zarr/ab/c/0/0"}
    expected["checkpoints/features.json"] = b'{"key": "3333"}'
    assert {p.relative_to(mirror).as_posix(): p.read_bytes() for p in mirror.rglob("*")
            if p.is_file() and not p.name.startswith(".")} == expected
    assert sync_down(uri, mirror) == {"downloaded": 0, "unchanged": 4, "removed": 0}
    assert sync_up(mirror, uri) == {"uploaded": 0, "deleted": 0, "unchanged": 4}

    # Another writer changed the remote (same size); a local file the remote lacks goes.
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/checkpoints/ingest.json", Body=b'{"key": "9999"}')
    _write(mirror / "stages/cameras/0/cameras.bin", b"stale")
    assert sync_down(uri, mirror) == {"downloaded": 1, "unchanged": 3, "removed": 1}
    assert (mirror / "checkpoints/ingest.json").read_bytes() == b'{"key": "9999"}'
    assert not (mirror / "stages/cameras/0/cameras.bin").exists()

    # A new output prefix is empty, not an error.
    assert sync_down("s3://landmark/runs/new", tmp_path / "new") == {"downloaded": 0, "unchanged": 0, "removed": 0}


def test_an_interrupted_upload_leaves_no_checkpoint_without_its_outputs(scene, s3_env, client, tmp_path,
                                                                       monkeypatch):
    uri, prefix = "s3://landmark/runs/interrupted", "runs/interrupted"
    work = tmp_path / "work"
    _write(work / "pairs.parquet", b"old pairs")
    _write(work / "checkpoints/matching.json", b'{"key": "old"}')
    sync_up(work, uri)

    # The stage runs again: new outputs and a new checkpoint; the connection drops mid-upload.
    _write(work / "pairs.parquet", b"new pairs, longer")
    _write(work / "tracks.zarr/chunk-0/zarr.json", b"{}")
    _write(work / "checkpoints/matching.json", b'{"key": "new"}')
    from storage.uris import filesystem

    fs, _ = filesystem(uri)
    real_put = fs.put

    def failing_put(lpaths, rpaths, *args, **kwargs):
        real_put(lpaths[:1], rpaths[:1], *args, **kwargs)
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(fs, "put", failing_put)
    with pytest.raises(StorageError, match="cannot upload to s3://landmark/runs/interrupted: ") as e:
        sync_up(work, uri)
    one_line(e.value)
    # The old checkpoint is gone (its outputs are being replaced); the new one is not there yet.
    assert "checkpoints/matching.json" not in keys(client, prefix)

    monkeypatch.setattr(fs, "put", real_put)
    sync_up(work, uri)
    assert keys(client, prefix) == {"pairs.parquet", "tracks.zarr/chunk-0/zarr.json", "checkpoints/matching.json"}
    assert client.get_object(Bucket=BUCKET, Key=f"{prefix}/pairs.parquet")["Body"].read() == b"new pairs, longer"


# ------------------------------------------------------------------------------ errors


def test_a_missing_bucket_is_a_one_line_error(scene, s3_env, tmp_path):
    with pytest.raises(SourceError) as e:
        list_image_files("s3://no-such-bucket/photos")
    assert "s3://no-such-bucket/photos" in one_line(e.value) and "does not exist" in str(e.value)

    with pytest.raises(StorageError) as e:
        sync_down("s3://no-such-bucket/out", tmp_path / "mirror")
    assert e.value.kind == "not-found" and "s3://no-such-bucket/out" in one_line(e.value)

    with pytest.raises(StorageError) as e:
        read_bytes("s3://landmark/scene/images/nothing-here.jpg")
    assert e.value.kind == "not-found" and one_line(e.value) == (
        "cannot read s3://landmark/scene/images/nothing-here.jpg: does not exist")

    with pytest.raises(SourceError, match="does not exist: s3://landmark/no/such/prefix"):
        list_image_files("s3://landmark/no/such/prefix")


def test_missing_credentials_are_a_one_line_error(scene, s3_env, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(SourceError) as e:
        list_image_files("s3://landmark/scene/images")
    message = one_line(e.value)
    assert "s3://landmark/scene/images" in message and "credentials" in message

    _write(tmp_path / "out" / "manifest.parquet", b"m")
    with pytest.raises(StorageError) as e:
        sync_up(tmp_path / "out", "s3://landmark/runs/no-credentials")
    assert e.value.kind == "credentials" and "s3://landmark/runs/no-credentials" in one_line(e.value)
    # Not a bad photo: probing stops on it instead of leaving every photo out.
    with pytest.raises(StorageError):
        probe_image("s3://landmark/scene/images/img_000.jpg")


def test_wrong_credentials_are_a_one_line_error(scene, s3_env, monkeypatch):
    # moto checks signatures only when told to; keys it never issued are then refused (403).
    _post(f"{s3_env}/moto-api/reset-auth", "0")
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        with pytest.raises(SourceError) as e:
            list_image_files("s3://landmark/scene/images")
        message = one_line(e.value)
        assert "s3://landmark/scene/images" in message and "access denied" in message

        with pytest.raises(StorageError) as e:
            read_bytes("s3://landmark/scene/images/img_000.jpg")
        assert e.value.kind == "permission"
    finally:
        _post(f"{s3_env}/moto-api/reset-auth", "inf")


def test_storage_options_and_an_unreachable_endpoint(scene, s3_env, monkeypatch):
    # The environment's endpoint is wrong; --storage-options, per protocol, names the right one.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    fast = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    with pytest.raises(SourceError) as e:
        list_image_files("s3://landmark/scene/images", {"s3": fast})
    assert "cannot reach the storage endpoint" in one_line(e.value)
    assert len(list_image_files("s3://landmark/scene/images", {"s3": {**fast, "endpoint_url": s3_env}})) == 10


def test_memory_filesystem_sources_and_mirrors(tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe("/test-sources/photos/a.jpg", b"a")
    memory.pipe("/test-sources/photos/sub/b.jpg", b"bb")
    memory.pipe("/test-sources/photos/.hidden", b"h")
    memory.pipe("/test-sources/list.txt", b"photos/sub/b.jpg\n")
    try:
        assert list_image_files("memory://test-sources/photos") == [
            "memory://test-sources/photos/a.jpg", "memory://test-sources/photos/sub/b.jpg"]
        assert list_image_files("memory://test-sources/list.txt") == ["memory://test-sources/photos/sub/b.jpg"]
        _write(tmp_path / "out" / "checkpoints" / "ingest.json", b"{}")
        sync_up(tmp_path / "out", "memory://test-sources/out")
        assert sync_down("memory://test-sources/out", tmp_path / "back")["downloaded"] == 1
        assert (tmp_path / "back" / "checkpoints" / "ingest.json").read_bytes() == b"{}"
    finally:
        memory.rm("/test-sources", recursive=True)


# ------------------------------------------------------------------------------ end to end


PER_CHUNK = ("tracks", "cameras", "triangulation", "bundle-adjustment")


def checkpoint_names() -> set[str]:
    """The checkpoint files of a one-chunk run: one per stage, the per-chunk ones per chunk."""
    from flows.reconstruct import STAGES
    return {f"{s}-chunk-0" if s in PER_CHUNK else s for s in STAGES}


@pytest.mark.slow
def test_reconstruct_from_s3_to_s3_resumes_after_a_kill(scene, s3_env, client, prefect_api, tmp_path):
    """Photos in a bucket, every output to a bucket; a run killed after its features resumes."""
    from prefect.settings import PREFECT_API_URL

    from flows.reconstruct import reconstruct
    from storage.colmap_model import evaluate_model_dirs

    source, out, prefix = "s3://landmark/scene/images", "s3://landmark/runs/e2e", "runs/e2e"
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", source, "--out", out], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "features.json" not in keys(client, f"{prefix}/checkpoints"):
            assert run.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "features never reached the bucket"
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    from flows.reconstruct import STAGES
    committed = {k.split("/")[1][:-len(".json")] for k in keys(client, prefix)
                 if k.startswith("checkpoints/") and k.endswith(".json")}
    assert {"ingest", "features"} <= committed and "export" not in committed
    # The bucket never holds a checkpoint without the outputs it describes.
    assert "manifest.parquet" in keys(client, prefix)
    assert any(k.startswith("features.zarr/") for k in keys(client, prefix))

    resumed = reconstruct(source, out)
    assert {s: resumed["stages"][s]["status"] for s in STAGES} == {
        s: "reused" if (f"{s}-chunk-0" if s in PER_CHUNK else s) in committed else "ran" for s in STAGES}
    assert resumed["totals"]["registered"] == 10

    outputs = keys(client, prefix)
    assert {"manifest.parquet", "pairs.parquet", "points.ply", "report.json", "sparse/0/cameras.bin",
            "sparse/0/images.bin", "sparse/0/points3D.bin", "tracks.zarr/chunk-0/zarr.json"} <= outputs
    assert {f"checkpoints/{name}.json" for name in checkpoint_names()} <= outputs
    report = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}/report.json")["Body"].read())
    assert report["totals"]["registered"] == 10
    manifest = tmp_path / "manifest.parquet"
    client.download_file(BUCKET, f"{prefix}/manifest.parquet", str(manifest))
    rows = read_manifest(str(manifest))
    assert [r.name for r in rows] == [f"img_{i:03d}.jpg" for i in range(10)]
    assert all(r.uri == f"{source}/{r.name}" and r.status == "ok" for r in rows)

    model = tmp_path / "sparse0"
    model.mkdir()
    for name in ("cameras.bin", "images.bin", "points3D.bin", "rigs.bin", "frames.bin"):
        if f"sparse/0/{name}" in outputs:
            client.download_file(BUCKET, f"{prefix}/sparse/0/{name}", str(model / name))
    accuracy = evaluate_model_dirs(model, scene / "gt")
    assert accuracy["registered"] == 10 and accuracy["auc@5"] >= 0.9

    # A re-run, from a fresh mirror, finds every stage's checkpoint in the bucket.
    again = reconstruct(source, out)
    assert all(again["stages"][s]["status"] == "reused" for s in STAGES)
