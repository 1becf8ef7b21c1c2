"""`kt ingest` (the ednet_ingest DAG): bring EdNet KT1 or Riiid files into the lake's raw/ednet/, once.

    kt ingest --source ~/Downloads/riiid-test-answer-prediction.zip --format riiid
    kt ingest --source https://example.org/EdNet-KT1.zip --format kt1
    kt ingest --source s3://bucket/ednet/ --format kt1

1. Identify the source without reading it all: size and mtime of local files,
   ETag / Last-Modified / Content-Length of an http(s) URL (HEAD), ETag and
   size of s3 objects. When ``raw/ednet/_ingest.json`` already records this
   source with the same identity and its files are all in place, nothing is
   done (the second run of the same source is a no-op).
2. Fetch: local files are read in place; http(s) and s3 objects are
   downloaded to ``<work>/ingest/<hash of the source>/``, resumably: a partial
   ``.part`` file continues with a ``Range`` request (``If-Range``/``IfMatch``
   on the ETag, so a changed file starts over).
3. Unpack ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``: members are streamed, not
   extracted to disk first.
4. Place the format's files where the ETL reads them (docs/contracts.md §3), in a
   new version ``raw/ednet/v=<time>/``: Riiid ``train.csv`` + ``questions.csv``; KT1
   ``contents/questions.csv`` and the per-user ``KT1/u<id>.csv`` files. A
   ``skill_mappings.json`` travels along.
5. Record sha256 and size of every fetched and every written file (KT1 user
   files as one count and byte total), and the source's identity, in
   the version's ``_ingest.json`` (written last: a crash before it means the next
   run does the work again).
6. Switch ``raw/ednet/_current.json`` to the new version once every file the
   record lists is in place (``kt.lake.publish_version``), and delete versions
   beyond ``KT_KEEP_VERSIONS``. Until then readers keep the previous version.

KT1's many small files: EdNet KT1 is ~784K files of a few KB. They are never
extracted to disk: the archive's members are streamed straight into the lake,
and into an S3 lake by ``WRITERS`` parallel uploads (one at a time, 784K PUTs
take hours). Both ETL engines read the per-user layout of docs/contracts.md §3 in one pass
(Spark: one CSV read with the file-path column). ``consolidate=True`` goes
further: the users' rows are appended, in file order, to CSV shards of about
``SHARD_BYTES`` (``KT1/part-00000.csv``, ...) whose first column is the
``user_id`` from the file name and whose other columns are KT1's own, byte for
byte; a user never spans two shards, so "row_id = position in the user's rows"
still holds. 784K objects become ~50, which both ETL engines read as they read
the per-user files (same sequences; a quarantined row names its shard). It is
the default (``consolidate=False`` keeps the per-user files).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Callable, Iterator
from urllib.parse import urlparse

from kt import lake
from kt.config import Settings
from kt.schema import KT1_COLUMNS, KT1_SHARD_COLUMNS

log = logging.getLogger(__name__)

FORMATS = ("riiid", "kt1")
RECORD = "_ingest.json"
SHARD_BYTES = 128 << 20  # consolidated KT1 shard size: a comfortable Spark split and python reader block
CHUNK = 1 << 20
KT1_USER_FILE = re.compile(r"^u([^/]*)\.csv$")
KT1_SHARD_HEADER = ",".join(KT1_SHARD_COLUMNS) + "\n"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_LISTED = 100  # skipped source files named in the record
WRITERS = 16  # parallel writes of KT1 user files (S3 PUTs are latency-bound)


class IngestError(RuntimeError):
    """The source cannot be ingested as asked (missing files, failed download)."""


@dataclass(frozen=True)
class Fetched:
    """A fetched file: where it is on this machine and what it was called at the source."""

    path: str
    name: str  # relative name at the source (directory sources keep their sub-paths)


# --- identity --------------------------------------------------------------------


def _is_http(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _local_identity(path: str) -> dict:
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, names in os.walk(path) for f in names
    )
    if not files:
        raise IngestError(f"{path}: no such file, or an empty directory")
    root = path if os.path.isdir(path) else os.path.dirname(path)
    return {os.path.relpath(f, root): {"size": os.path.getsize(f), "mtime_ns": os.stat(f).st_mtime_ns} for f in files}


def _http_identity(url: str) -> dict:
    import httpx

    response = httpx.head(url, follow_redirects=True, timeout=30)
    response.raise_for_status()
    name = os.path.basename(urlparse(str(response.url)).path) or "download"
    headers = response.headers
    return {name: {"size": int(headers["content-length"]) if "content-length" in headers else None,
                   "etag": headers.get("etag"), "last_modified": headers.get("last-modified")}}


def _s3_identity(settings: Settings, uri: str) -> dict:
    from kt import aws

    bucket, _, key = uri[len("s3://"):].partition("/")
    prefix = key if not key or key.endswith("/") else key + "/"
    client = aws.client(settings, "s3")
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for obj in page.get("Contents", []):
            if obj["Key"] == key:  # the source is one object
                name = os.path.basename(key)
            elif obj["Key"].startswith(prefix):
                name = obj["Key"][len(prefix):]
            else:
                continue  # s3://b/data also lists s3://b/data2/...
            objects[name] = {"size": obj["Size"], "etag": obj["ETag"], "uri": f"s3://{bucket}/{obj['Key']}"}
    if not objects:
        raise IngestError(f"{uri}: no such object or prefix")
    return objects


def identify(settings: Settings, source: str) -> dict:
    """What identifies the source's current content, per file, without reading it."""
    if _is_http(source):
        return _http_identity(source)
    if lake.is_s3(source):
        return _s3_identity(settings, source)
    return _local_identity(os.path.expanduser(source))


def _strong(identity: dict) -> bool:
    """True when the identity alone proves the content unchanged (an ETag or a size+mtime)."""
    return all(v.get("etag") or v.get("mtime_ns") or v.get("last_modified") for v in identity.values())


# --- fetch ---------------------------------------------------------------------------


def work_dir(settings: Settings, source: str) -> str:
    """Where downloads of this source are staged: beside a local lake, else under .kt/."""
    base = ".kt" if lake.is_s3(settings.lake) else os.path.dirname(os.path.abspath(settings.lake))
    return os.path.join(base, "ingest", hashlib.sha256(source.encode()).hexdigest()[:16])


def download_http(url: str, target: str, etag: str | None = None) -> str:
    """Download url to target, continuing a partial target.part with a Range request; return target."""
    import httpx

    part = target + ".part"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    if have and etag:
        headers["If-Range"] = etag  # the server sends the whole file (200) if it changed since
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as response:
        if response.status_code == 416 and have:  # nothing left to send: the part is whole
            os.replace(part, target)
            return target
        response.raise_for_status()
        resumed = response.status_code == 206
        if have:
            log.info("%s: %s at byte %d", url, "resuming" if resumed else "server ignored Range, starting over", have)
        total = _total_size(response.headers, have if resumed else 0)
        with open(part, "ab" if resumed else "wb") as f:
            for block in response.iter_bytes():  # as received: a dropped connection keeps what arrived
                f.write(block)
    size = os.path.getsize(part)
    if total is not None and size != total:
        raise IngestError(f"{url}: got {size} of {total} bytes; run again to resume")
    os.replace(part, target)
    return target


def _total_size(headers: "httpx.Headers", offset: int) -> int | None:  # noqa: F821 - httpx is imported lazily
    if "content-range" in headers:  # bytes 100-199/200
        total = headers["content-range"].rsplit("/", 1)[-1]
        return int(total) if total.isdigit() else None
    return offset + int(headers["content-length"]) if "content-length" in headers else None


def download_s3(settings: Settings, uri: str, target: str, etag: str | None = None) -> str:
    """Download an s3 object to target, continuing a partial target.part with a ranged GetObject."""
    from botocore.exceptions import ClientError

    from kt import aws

    bucket, _, key = uri[len("s3://"):].partition("/")
    client = aws.client(settings, "s3")
    part = target + ".part"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    if have > size:
        have = 0
    if have < size:
        kwargs = {"Bucket": bucket, "Key": key, "Range": f"bytes={have}-"}
        if etag:
            kwargs["IfMatch"] = etag
        try:
            body = client.get_object(**kwargs)["Body"]
        except ClientError as e:
            if e.response["Error"]["Code"] not in ("PreconditionFailed", "412"):
                raise
            log.info("%s changed since the partial download: starting over", uri)
            have, body = 0, client.get_object(Bucket=bucket, Key=key)["Body"]
        with open(part, "ab" if have else "wb") as f:
            for block in iter(lambda: body.read(CHUNK), b""):
                f.write(block)
    if os.path.getsize(part) != size:
        raise IngestError(f"{uri}: got {os.path.getsize(part)} of {size} bytes; run again to resume")
    os.replace(part, target)
    return target


def fetch(settings: Settings, source: str, identity: dict) -> list[Fetched]:
    """The source's files on this machine (downloaded when remote)."""
    if not _is_http(source) and not lake.is_s3(source):
        path = os.path.expanduser(source)
        root = path if os.path.isdir(path) else os.path.dirname(path)
        return [Fetched(os.path.join(root, name), name) for name in identity]
    staging = work_dir(settings, source)
    out = []
    for name, ident in identity.items():
        target = os.path.join(staging, "download", name)
        if _is_http(source):
            download_http(source, target, ident.get("etag"))
        else:
            download_s3(settings, ident["uri"], target, ident.get("etag"))
        out.append(Fetched(target, name))
    return out


# --- unpack and place ------------------------------------------------------------------


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def members(fetched: list[Fetched]) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(name, opener) of every file, archives' members included, without extracting to disk."""
    for item in fetched:
        if not _is_archive(item.name):
            yield item.name, lambda path=item.path: open(path, "rb")
        elif item.name.lower().endswith(".zip"):
            with zipfile.ZipFile(item.path) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        yield info.filename, lambda info=info, archive=archive: archive.open(info)
        else:
            with tarfile.open(item.path, "r:*") as archive:
                for info in archive:
                    if info.isfile():
                        yield info.name, lambda info=info, archive=archive: archive.extractfile(info)


def destination(name: str, fmt: str) -> str | None:
    """Where a source file goes under raw/ednet/ ("KT1" for a user file to consolidate), or None to skip."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith(("._", ".")) or "__MACOSX/" in name:
        return None
    if base == "skill_mappings.json":
        return base
    if fmt == "riiid":
        return base if base in ("train.csv", "questions.csv") else None
    if base == "questions.csv":
        return "contents/questions.csv"
    return "KT1" if KT1_USER_FILE.match(base) else None


REQUIRED = {"riiid": ("train.csv", "questions.csv"), "kt1": ("contents/questions.csv", "KT1")}


class _HashingWriter:
    """A lake file being written, with its sha256 and size computed on the way."""

    def __init__(self, uri: str):
        self.uri = uri
        self.stream = lake.open_write(uri)
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.stream.write(data)
        self.digest.update(data)
        self.size += len(data)

    def close(self) -> dict:
        self.stream.close()
        return {"size": self.size, "sha256": self.digest.hexdigest()}


class KT1Files:
    """Writes KT1 user files as they are (KT1/u<id>.csv), WRITERS at a time; listed as a count and a byte total."""

    def __init__(self, raw: str):
        from concurrent.futures import ThreadPoolExecutor

        self.raw = raw
        self.pool = ThreadPoolExecutor(WRITERS)
        self.pending: list = []
        self.files: dict[str, dict] = {}  # none listed one by one: 784K entries would not fit a record
        self.users = self.rows = self.count = self.bytes = 0

    def add(self, name: str, data: bytes) -> None:
        base = name.rsplit("/", 1)[-1]
        self.pending.append(self.pool.submit(lake.write_bytes, lake.join(self.raw, "KT1", base), data))
        self.users += 1
        self.count += 1
        self.bytes += len(data)
        self.rows += max(0, len([line for line in data.splitlines() if line.strip()]) - 1)
        if len(self.pending) >= 4 * WRITERS:  # bounded: the archive is read no faster than the lake takes it
            self.pending.pop(0).result()

    def close(self) -> None:
        for future in self.pending:
            future.result()
        self.pool.shutdown()


def _csv_field(text: str) -> str:
    """A CSV field as written: quoted when it holds a comma, quote or line break (a user id from a file name)."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


class KT1Shards:
    """Appends KT1 user files to CSV shards of about SHARD_BYTES, with a leading user_id column."""

    def __init__(self, raw: str, shard_bytes: int = SHARD_BYTES):
        self.raw = raw
        self.shard_bytes = shard_bytes
        self.writer: _HashingWriter | None = None
        self.files: dict[str, dict] = {}
        self.users = self.rows = 0

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def bytes(self) -> int:
        return sum(meta.get("size", 0) for meta in self.files.values())

    def add(self, name: str, data: bytes) -> None:
        """One user's file: header dropped, every line prefixed with the user id."""
        user_id = _csv_field(KT1_USER_FILE.match(name.rsplit("/", 1)[-1]).group(1)).encode()
        lines = data.removeprefix(b"\xef\xbb\xbf").splitlines()  # a UTF-8 BOM would glue onto the header
        first = next((i for i, line in enumerate(lines) if line.strip()), len(lines))  # the header, as readers take it
        if first < len(lines) and next(csv.reader([lines[first].decode("utf-8", "replace").strip()])) != list(KT1_COLUMNS):
            raise IngestError(f"{name}: header {lines[first][:200]!r} is not KT1's {','.join(KT1_COLUMNS)}: its "
                              "rows cannot be consolidated column for column (ingest without consolidation)")
        body = b"".join(user_id + b"," + line + b"\n" for line in lines[first + 1:] if line.strip())
        full = self.writer is not None and self.writer.size + len(body) > self.shard_bytes
        if self.writer is None or (full and self.writer.size > len(KT1_SHARD_HEADER)):
            self._next_shard()
        self.writer.write(body)
        self.users += 1
        self.rows += body.count(b"\n")

    def _next_shard(self) -> None:
        self.close()
        rel = f"KT1/part-{len(self.files):05d}.csv"
        self.writer = _HashingWriter(lake.join(self.raw, rel))
        self.files[rel] = {}
        self.writer.write(KT1_SHARD_HEADER.encode())

    def close(self) -> None:
        if self.writer is not None:
            rel = self.writer.uri[len(self.raw):].lstrip("/")
            self.files[rel] = self.writer.close()
            self.writer = None


def place(raw: str, fmt: str, fetched: list[Fetched], consolidate: bool = False) -> dict:
    """Write the format's files into raw/ (a new version: replacing its content); return what was written and skipped."""
    lake.delete(raw)
    files: dict[str, dict] = {}
    skipped: list[str] = []
    users = KT1Shards(raw) if consolidate else KT1Files(raw)
    for name, opener in members(fetched):
        target = destination(name, fmt)
        if target is None:
            skipped.append(name)
        elif target == "KT1":
            with opener() as f:
                users.add(name, f.read())
        elif target in files:
            raise IngestError(f"two source files would both be raw/ednet/{target} (the second is {name})")
        else:
            writer = _HashingWriter(lake.join(raw, target))
            with opener() as f:
                shutil.copyfileobj(f, writer, CHUNK)
            files[target] = writer.close()
    users.close()
    files.update(users.files)
    present = set(files) | ({"KT1"} if users.users else set())
    missing = [r for r in REQUIRED[fmt] if r not in present]
    if missing:
        raise IngestError(f"the source has no {', '.join(missing)} for format {fmt} "
                          f"(found {sorted(files) or 'nothing usable'}; skipped {skipped[:10]})")
    kt1 = {"users": users.users, "rows": users.rows, "layout": "shards" if consolidate else "per-user files",
           "files": users.count, "bytes": users.bytes} if users.users else None
    return {"files": files, "kt1": kt1, "skipped": skipped[:MAX_LISTED], "skipped_count": len(skipped)}


# --- the whole step ------------------------------------------------------------------


def check_placed(raw: str) -> dict:
    """A raw version's record, refused unless every file it lists is in place: only then is it switched to."""
    record = read_record(raw)
    if record is None or not _in_place(raw, record):
        raise IngestError(f"{raw}: {RECORD} is missing or its files are not all in place")
    return record


def read_record(raw: str) -> dict | None:
    uri = lake.join(raw, RECORD)
    return json.loads(lake.read_text(uri)) if lake.exists(uri) else None


def _in_place(raw: str, record: dict) -> bool:
    """Every file the record lists is still in raw/ with its recorded size, and the KT1 files all there."""
    listed = all(lake.exists(lake.join(raw, rel)) and lake.size(lake.join(raw, rel)) == meta["size"]
                 for rel, meta in record["files"].items())
    kt1 = record.get("kt1")
    if not listed or not kt1 or kt1["layout"] == "shards":
        return listed
    users = [uri for uri in lake.list_files(lake.join(raw, "KT1")) if KT1_USER_FILE.match(uri.rsplit("/", 1)[-1])]
    return len(users) == kt1["files"] and sum(lake.size(u) for u in users) == kt1["bytes"]


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def ingest(settings: Settings, source: str, fmt: str, consolidate: bool = True) -> dict:
    """Bring one source into raw/ednet/ unless it is there already; return the record and whether it changed."""
    if fmt not in FORMATS:
        raise IngestError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    root = lake.uris(settings)["raw"]
    raw = lake.current(root)
    identity = identify(settings, source)
    record = read_record(raw)
    same_source = (record is not None and record["source"] == source and record["format"] == fmt
                   and record["consolidate"] == consolidate)
    if same_source and _strong(identity) and record["identity"] == identity and _in_place(raw, record):
        log.info("%s is already in %s (same %s): nothing to do", source, raw, "ETag/size/mtime")
        return {"changed": False, "raw": raw, **record}
    fetched = fetch(settings, source, identity)
    checksums = {f.name: {"size": os.path.getsize(f.path), "sha256": _sha256_file(f.path)} for f in fetched}
    if same_source and record["fetched"] == checksums and _in_place(raw, record):
        log.info("%s has new metadata but the same bytes (sha256): nothing to do", source)
        lake.write_text(lake.join(raw, RECORD), json.dumps({**record, "identity": identity}, indent=1))
        if raw != root:  # the pointer records the record's checksum: the same version again, with the new one
            lake.switch(root, raw[len(root):].strip("/"), RECORD, settings.keep_versions)
        return {"changed": False, "raw": raw, **record}
    for item in fetched:
        if not lake.is_s3(root) and os.path.abspath(item.path).startswith(os.path.abspath(root) + os.sep):
            raise IngestError(f"{item.path} is inside {root}, whose old versions ingestion deletes: copy it elsewhere")

    def write(version: str) -> dict:
        placed = place(version, fmt, fetched, consolidate)
        written = {"source": source, "format": fmt, "consolidate": consolidate, "identity": identity,
                   "fetched": checksums, **placed,
                   "ingested_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        lake.write_text(lake.join(version, RECORD), json.dumps(written, indent=1))
        return written

    published = lake.publish_version(root, write, check_placed, RECORD, settings.keep_versions)
    record = {k: v for k, v in published.items() if k not in ("pointer", "pruned")}
    raw = lake.join(root, published["pointer"]["version"])
    if _is_http(source) or lake.is_s3(source):
        shutil.rmtree(work_dir(settings, source), ignore_errors=True)  # the lake has it now
    log.info("ingested %s into %s: %s, KT1 %s; old versions deleted: %s", source, raw, sorted(record["files"]),
             record["kt1"], published["pruned"])
    return {"changed": True, "raw": raw, **record}


def main(settings: Settings, source: str, fmt: str, consolidate: bool = True) -> int:
    """`kt ingest`: print what was written (or that nothing had to be)."""
    try:
        result = ingest(settings, source, fmt, consolidate)
    except IngestError as e:
        print(f"ingest failed: {e}")
        return 1
    summary = {k: result[k] for k in ("changed", "raw", "source", "format", "kt1")}
    summary["files"] = {rel: meta["size"] for rel, meta in result["files"].items()}
    print(json.dumps(summary, indent=1))
    return 0
