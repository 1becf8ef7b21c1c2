"""The lake: the same layout under a local directory or an ``s3://`` URI (docs/contracts.md §3).

Every path in the pipeline is a string URI; ``pyarrow.fs`` resolves it, so
parquet and JSON code is written once. Local Spark and the local SageMaker
runners cannot read ``s3://`` here, so ``stage`` copies a prefix to a local
directory and ``publish`` copies one back.

Datasets (raw/ednet, processed/ednet) are versioned: each run writes a new
``<root>/v=<time>/`` and switches the pointer ``<root>/_current.json`` only
once its output is complete and checked; readers resolve the pointer through
``dataset``/``current``. Every lake path is built here (``uris``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import IO, Callable

import pyarrow.fs as pafs

from kt.config import Settings


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(root: str, *parts: str) -> str:
    """Join lake path parts with '/', whatever the root is."""
    out = root.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for a URI and the path inside it."""
    if is_s3(uri):
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def open_write(uri: str) -> IO[bytes]:
    fs, path = filesystem(uri)
    if not is_s3(uri):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return fs.open_output_stream(path)


def open_read(uri: str) -> IO[bytes]:
    fs, path = filesystem(uri)
    return fs.open_input_file(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object; locally through a temp file so readers never see half of it."""
    if is_s3(uri):
        with open_write(uri) as f:
            f.write(data)
        return
    path = os.path.abspath(uri)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as f:
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).size


def list_files(uri: str) -> list[str]:
    """All files below a prefix, sorted, as URIs of the same kind."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    files = sorted(i.path for i in info if i.type == pafs.FileType.File)
    if is_s3(uri):
        return [f"s3://{p}" for p in files]
    return files


def delete(uri: str) -> None:
    """Remove a file or a whole prefix; absent is fine."""
    fs, path = filesystem(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


CHECKSUM_THREADS = 64  # checksums of many files are bound by S3 GET latency, not CPU
CHUNK = 4 << 20


def sha256(uri: str, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with open_read(uri) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksums(uris: list[str]) -> list[dict]:
    """{"path", "bytes", "sha256"} of every file (the ETL manifests' inputs), each read once, by a thread pool.

    One filesystem per bucket: ``filesystem`` builds a new one (and resolves the
    S3 region) per call, which would double the requests for KT1's ~784K files.
    """
    filesystems: dict[str, pafs.FileSystem] = {}
    for uri in uris:
        if _bucket(uri) not in filesystems:
            filesystems[_bucket(uri)] = filesystem(uri)[0]

    def digest(uri: str) -> dict:
        sha, size = hashlib.sha256(), 0
        path = uri[len("s3://"):] if is_s3(uri) else os.path.abspath(uri)
        with filesystems[_bucket(uri)].open_input_stream(path) as f:
            while block := f.read(CHUNK):
                sha.update(block)
                size += len(block)
        return {"path": uri, "bytes": size, "sha256": sha.hexdigest()}

    with ThreadPoolExecutor(CHECKSUM_THREADS) as pool:
        return list(pool.map(digest, uris))


def _bucket(uri: str) -> str:
    return uri.split("/", 3)[2] if is_s3(uri) else ""


def stage(uri: str, local_dir: str) -> str:
    """Copy a lake prefix (or file) to a local directory; return the local path."""
    if not is_s3(uri):
        return os.path.abspath(uri)
    fs, path = filesystem(uri)
    os.makedirs(local_dir, exist_ok=True)
    if fs.get_file_info(path).type == pafs.FileType.File:
        target = os.path.join(local_dir, os.path.basename(path))
        pafs.copy_files(path, target, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        return target
    pafs.copy_files(path, local_dir, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return local_dir


def publish(local_path: str, uri: str) -> None:
    """Copy a local file or directory to a lake URI (replacing what is there)."""
    if not is_s3(uri):
        target = os.path.abspath(uri)
        if os.path.abspath(local_path) == target:
            return
        if os.path.isdir(local_path):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(local_path, target)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(local_path, target)
        return
    fs, path = filesystem(uri)
    delete(uri)
    pafs.copy_files(local_path, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


# --- where things are, and which version of a dataset is current (docs/contracts.md §3) -------------------

POINTER = "_current.json"  # the dataset's pointer object: names the version readers use
VERSION_PREFIX = "v="  # <root>/v=<UTC timestamp>/...: S3 lifecycle rules select versions by this key prefix
DEFAULT_KEEP_VERSIONS = Settings.keep_versions  # for the Glue job, which reads no settings (KT_KEEP_VERSIONS)


def uris(settings: Settings, run_date: str | None = None) -> dict[str, str]:
    """The lake prefixes of docs/contracts.md §3, the one place they are spelled.

    "raw" and "processed" are the dataset roots (the assets, where the pointer
    lives), not the data: readers take ``dataset(settings, which)``.
    """
    root = settings.lake
    out = {
        "raw": join(root, "raw", "ednet"),
        "processed": join(root, "processed", "ednet"),
        "models": join(root, "models", "dkt"),
        "current_model": join(root, "models", "dkt", "current.json"),
        "checkpoints": join(root, "models", "dkt", "checkpoints"),
        "sourcedir": join(root, "artifacts", "sagemaker", "sourcedir.tar.gz"),
        "events": join(root, "events", "answers"),
        "drift": join(root, "monitoring", "drift"),
        # SageMaker appends <endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl; the trailing "/" as Terraform writes it.
        "data_capture": join(root, "monitoring", "data-capture") + "/",
    }
    if run_date:
        out["batch_input"] = join(root, "inference", "batch", run_date, "input")
        out["batch_output"] = join(root, "inference", "batch", run_date, "output")
    return out


def dataset(settings: Settings, which: str) -> str:
    """The current version of the raw or processed dataset: what every reader reads."""
    return current(uris(settings)[which])


def read_pointer(root: str) -> dict | None:
    uri = join(root, POINTER)
    return json.loads(read_text(uri)) if exists(uri) else None


def current(root: str) -> str:
    """The version the root's pointer names; without a pointer the root itself (a lake from before versions).

    A URI that is already a version (no pointer below it) resolves to itself.
    """
    pointer = read_pointer(root)
    return join(root, pointer["version"]) if pointer else root


def new_version() -> str:
    """A fresh version name, e.g. v=20261202T141503123456Z: unique per run, sorted by time."""
    return VERSION_PREFIX + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def versions(root: str) -> list[str]:
    """The version names under a dataset root, oldest first."""
    fs, path = filesystem(root)
    info = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    names = (i.path.rstrip("/").rsplit("/", 1)[-1] for i in info if i.type == pafs.FileType.Directory)
    return sorted(n for n in names if n.startswith(VERSION_PREFIX))


def switch(root: str, version: str, manifest: str, keep: int) -> dict:
    """Point the dataset at a complete, checked version: one small object, written last and whole.

    On S3 a single PUT replaces the pointer atomically; locally ``write_bytes``
    renames a temporary file over it, so readers see the old version or the new
    one. ``previous`` lists the keep-1 versions served before, newest first:
    what ``prune`` keeps. The pointer never moves back to an older version.
    """
    old = read_pointer(root)
    if old and version < old["version"]:  # two runs at once: the one started last is served, whichever ends last
        raise RuntimeError(f"{root}: {old['version']}, newer than {version}, was switched to meanwhile")
    served = [old["version"], *old.get("previous", [])] if old else []
    previous = [v for v in served if v != version][:max(keep - 1, 0)]
    pointer = {"version": version, "manifest": manifest, "manifest_sha256": sha256(join(root, version, manifest)),
               "previous": previous, "switched_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_text(join(root, POINTER), json.dumps(pointer, indent=1))
    return pointer


def prune(root: str) -> list[str]:
    """After a switch: delete every version older than the current one that the pointer does not keep.

    Kept: the current version and its ``previous``. Versions newer than the
    current one (a run still writing) are left alone; older ones that were
    never served (a run that died, a manifest that did not check out) go.
    Returns the deleted version names.
    """
    pointer = read_pointer(root)
    if pointer is None:
        return []
    kept = {pointer["version"], *pointer["previous"]}
    doomed = [v for v in versions(root) if v < pointer["version"] and v not in kept]
    for name in doomed:
        delete(join(root, name))
    return doomed


def publish_version(root: str, write: Callable[[str], dict], check: Callable[[str], object], manifest: str,
                    keep: int) -> dict:
    """Write one run as a new version of a dataset, check it, switch the pointer to it, prune old versions.

    ``write(version_uri)`` writes the whole output (its manifest last) and
    returns the manifest; ``check(version_uri)`` raises unless it checks out.
    Anything that fails or dies before the switch leaves the pointer, and so
    every reader, on the previous version. Returns the manifest with the
    pointer under "pointer" and the deleted versions under "pruned".
    """
    version = new_version()
    result = write(join(root, version))
    check(join(root, version))
    pointer = switch(root, version, manifest, keep)
    return {**result, "pointer": pointer, "pruned": prune(root)}
