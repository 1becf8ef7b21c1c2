"""boto3 clients from the settings, and the embedded moto server for local runs.

In the local runtime every AWS API (DynamoDB, CloudWatch, S3 for tests) is a
moto server: the one at ``AWS_ENDPOINT_URL`` when set (docker-compose, tests),
or one started in this process for the run (``kt demo``, ``kt refresh``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
from typing import Any, Iterator

import boto3
from botocore.config import Config

from kt.config import Settings

log = logging.getLogger(__name__)

RETRIES = Config(retries={"max_attempts": 10, "mode": "adaptive"})
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def client(settings: Settings, service: str) -> Any:
    """A boto3 client for the configured region and endpoint (local runs get dummy credentials)."""
    kwargs: dict[str, Any] = {"region_name": settings.region, "config": RETRIES}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    if settings.runtime == "local":
        kwargs.update(LOCAL_CREDENTIALS)
    return boto3.client(service, **kwargs)


def free_port() -> int:
    """A port nothing listens on now (for a server started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_aws(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a moto server: the configured one, or an embedded one for this run."""
    if settings.runtime != "local" or settings.aws_endpoint_url:
        yield settings
        return
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    log.info("no AWS_ENDPOINT_URL: started an embedded, in-memory moto server at %s for this run", url)
    try:
        yield dataclasses.replace(settings, aws_endpoint_url=url)
    finally:
        server.stop()
