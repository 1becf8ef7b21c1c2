"""Record every AWS API call made in this process while a block runs: botocore calls and the lake's S3 calls.

Two sources, because the pipeline reaches AWS two ways:
- botocore (boto3 clients of kt and of the Amazon provider's hooks): every operation goes through
  ``BaseClient._make_api_call``; the recorder wraps it and keeps (service, operation, parameters).
  The provider's triggers (deferred waits) call through aiobotocore, whose client overrides that
  method with a coroutine: it is wrapped the same way.
- pyarrow's S3 filesystem (kt.lake): the AWS SDK for C++, which botocore never sees. Its requests reach
  the in-process moto server; the recorder wraps the server's WSGI application and names the S3
  operation of each request from its method, path and query (the REST API's own routing).

Requests of botocore clients are skipped at the HTTP layer (their user agent says so), so no call is counted
twice. Used by tests/dags/test_iam_calls.py with iam_check.py.
"""

from __future__ import annotations

import contextlib
import html
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import aiobotocore.client
import botocore.client

# IAM service prefix of a botocore service name, where they differ.
IAM_PREFIX = {"sagemaker-runtime": "sagemaker", "monitoring": "cloudwatch"}


@dataclass
class Call:
    """One AWS API call: IAM service prefix, API operation, its parameters, and which client made it."""

    service: str
    operation: str
    params: dict[str, Any]
    client: str  # "botocore" or the user agent's product (pyarrow: "aws-sdk-cpp")
    where: str = ""  # the flow it was recorded in

    def __str__(self) -> str:
        shown = {k: v for k, v in self.params.items() if isinstance(v, str)}
        return f"{self.service}:{self.operation} {shown} ({self.client}, {self.where})"


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    where: str = ""

    def add(self, call: Call) -> None:
        call.where = self.where
        self.calls.append(call)


def s3_operation(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[str, dict]:
    """The S3 REST operation of a path-style request and its key parameters (bucket, key, prefix)."""
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    params: dict[str, Any] = {"Bucket": bucket}
    if key:
        params["Key"] = key
    if not key:
        if "location" in query:
            return "GetBucketLocation", params
        if "delete" in query and method == "POST":
            return "DeleteObjects", params  # the keys are in the body: added by the caller
        if method == "HEAD":
            return "HeadBucket", params
        if method == "GET":
            params["Prefix"] = query.get("prefix", [""])[0]
            return ("ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"), params
        if method == "PUT":
            return "CreateBucket", params
        raise AssertionError(f"unknown S3 bucket request {method} {path} {query}")
    if method == "GET":
        return "GetObject", params
    if method == "HEAD":
        return "HeadObject", params
    if method == "DELETE":
        return ("AbortMultipartUpload" if "uploadId" in query else "DeleteObject"), params
    if method == "POST":
        return ("CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"), params
    if method == "PUT":
        if "uploadId" in query:
            return ("UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"), params
        if "x-amz-copy-source" in headers:
            source = unquote(headers["x-amz-copy-source"]).lstrip("/")
            params["CopySource"] = source
            return "CopyObject", params
        return "PutObject", params
    raise AssertionError(f"unknown S3 object request {method} {path}")


def _signing_service(authorization: str) -> str:
    """The service of a SigV4 Authorization header: Credential=<key>/<date>/<region>/<service>/aws4_request."""
    match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", authorization)
    return match.group(1) if match else ""


def _wsgi_recorder(app: Any, recorder: Recorder) -> Any:
    def wrapped(environ: dict, start_response: Any) -> Any:
        agent = environ.get("HTTP_USER_AGENT", "")
        if _signing_service(environ.get("HTTP_AUTHORIZATION", "")) == "s3" and "Botocore" not in agent:
            host = environ.get("HTTP_HOST", "").split(":")[0]
            assert host in ("127.0.0.1", "localhost"), f"virtual-host style S3 request to {host}: not parsed here"
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
            operation, params = s3_operation(environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/"), query, headers)
            if operation == "DeleteObjects":  # read the body for its keys, then hand it on unread
                body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                environ["wsgi.input"] = io.BytesIO(body)
                keys = re.findall(r"<Key>(.*?)</Key>", body.decode("utf-8"))
                params["Delete"] = {"Objects": [{"Key": html.unescape(k)} for k in keys]}
            recorder.add(Call("s3", operation, params, agent.split("/")[0] or "unknown"))
        return app(environ, start_response)

    return wrapped


@contextlib.contextmanager
def recording(moto_server: Any = None) -> Iterator[Recorder]:
    """Record the calls of the block; ``moto_server`` (a started ThreadedMotoServer) adds non-botocore S3 calls."""
    recorder = Recorder()
    original = botocore.client.BaseClient._make_api_call

    def make_api_call(client: Any, operation_name: str, api_params: dict) -> Any:
        service = client.meta.service_model.service_name
        recorder.add(Call(IAM_PREFIX.get(service, service), operation_name, dict(api_params), "botocore"))
        return original(client, operation_name, api_params)

    aio_original = aiobotocore.client.AioBaseClient._make_api_call

    async def aio_make_api_call(client: Any, operation_name: str, api_params: dict) -> Any:
        service = client.meta.service_model.service_name
        recorder.add(Call(IAM_PREFIX.get(service, service), operation_name, dict(api_params), "botocore"))
        return await aio_original(client, operation_name, api_params)

    server = getattr(moto_server, "_server", None)
    app = server.app if server is not None else None
    botocore.client.BaseClient._make_api_call = make_api_call
    aiobotocore.client.AioBaseClient._make_api_call = aio_make_api_call
    if server is not None:
        server.app = _wsgi_recorder(app, recorder)
    try:
        yield recorder
    finally:
        botocore.client.BaseClient._make_api_call = original
        aiobotocore.client.AioBaseClient._make_api_call = aio_original
        if server is not None:
            server.app = app

