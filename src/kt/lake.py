"""The lake: the same layout under a local directory or an ``s3://`` URI (docs/contracts.md §3).

Every path in the pipeline is a string URI; ``pyarrow.fs`` resolves it, so
parquet and JSON code is written once. Local Spark and the local SageMaker
runners cannot read ``s3://`` here, so ``stage`` copies a prefix to a local
directory and ``publish`` copies one back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import pyarrow.fs as pafs


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
