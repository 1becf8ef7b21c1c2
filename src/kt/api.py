"""The mastery API: the local twin of the API Gateway deployment (terraform/api_gateway.tf), and the page.

    kt api --port 8000                     # KT_API_KEY=... to require the x-api-key header
    curl -H 'x-api-key: ...' 'localhost:8000/api/kt/mastery?user_id=tutor-0001'

Routes, with the bodies of the Terraform mapping templates (docs/contracts.md §6, §7, §9):

``GET /api/kt/mastery?user_id=U``
    200 ``{user_id, mastery, topic_mastery, next_skill_recommendation,
    predicted_accuracy, model_version, source, as_of, updated_at,
    n_interactions}``; 404 ``{"error": "unknown user_id", "field": "user_id"}``.
    Which estimate is served:

    1. ``SAGEMAKER_KT_ENABLED=true`` and the user's kt-mastery row has
       ``source = "dkt"``: that row (the nightly DKT refresh), as on AWS.
    2. Otherwise the Bayesian estimate (``kt.bayes``) computed now from all the
       user's answers in kt-history: ``source = "bayes"``, ``as_of`` = the last
       answer's ``answered_at``, ``updated_at`` = now. It equals the Bayesian
       row ``POST /api/kt/answers`` keeps in kt-mastery, and stays right for
       answers loaded from the lake, which have no row.
    3. No DKT row to serve and no answers: 404.

``POST /api/kt/mastery`` with ``{"user_sequence": [...]}``
    Live mastery. DKT enabled: the endpoint answers (``SAGEMAKER_KT_ENDPOINT``
    through sagemaker-runtime InvokeEndpoint, or ``endpoint_url``: a
    ``kt endpoint serve`` on the SageMaker hosting contract), within
    ``endpoint_timeout`` seconds. Its 4xx (a bad request) is passed through as
    API Gateway does; a timeout, a 5xx, a connection failure or an invalid body
    makes the Bayesian estimate answer instead. DKT disabled: the Bayesian
    estimate. The body is docs/contracts.md §6.2 plus ``source`` (``dkt`` or ``bayes``) and,
    after a fallback, ``fallback_reason``: local additions, API Gateway passes
    the endpoint's body through untouched.

``POST /api/kt/answers`` with ``{user_id, answer_id, skill_id, correct, content_id?, answered_at}``
    200 ``{"status": "stored"}``, or ``{"status": "duplicate"}`` for an
    answer_id seen before (the ``attribute_not_exists(ts)`` condition of the
    Terraform template). The answer goes first to the lake
    (``events/answers/day=<day>/api-<pid>.jsonl``, appended and fsynced: the
    lake is the local source of truth, docs/contracts.md §7.3), then to kt-history, then the
    user's Bayesian row in kt-mastery is rewritten from the whole history.
    A crash between the steps is repaired by the client's retry: the answer is
    never lost, and at worst appears twice in the lake, where every reader
    keys answers by (user_id, answer_id) as kt-history does.

``GET /knowledge-state/{user_id}``
    The Knowledge State page: an inline-SVG spider chart of the 8 topics (DKT
    and Bayesian), the recommended next topic and the skill inside it (``kt.tutor``). No
    JavaScript, no CDN: it renders offline. ``/static/`` holds its stylesheet.

Bayesian rows never replace newer evidence. A Bayesian write replaces a
Bayesian row with an older last answer, or the same last answer and fewer
answers (a late answer arriving out of order). It never replaces a DKT row
while DKT is enabled (the nightly refresh owns it; live DKT is
``POST /api/kt/mastery``); with DKT disabled it replaces a DKT row whose
``as_of`` is strictly older. The refresh's own condition
(``kt.dynamo.MASTERY_CONDITION``) lets a DKT row replace a Bayesian row with
the same or an older ``as_of``.

Every route but ``/static/`` needs the ``x-api-key`` header when ``KT_API_KEY``
is set (compared in constant time; 403 otherwise). When it is unset the app
logs a warning at start and lets every request in: local development only;
the aws runtime refuses to start without a key. Bodies are limited (413),
inputs are validated (4xx naming the field), and AWS failures answer 502.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import anyio
import boto3
import httpx
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kt import aws, bayes, dynamo, lake, refresh, tutor, web
from kt.config import ConfigError, Settings, env_var
from kt.mastery import response as mastery_response
from kt.topics import DEFAULT_SKILL_TOPICS, OTHER_TOPIC

log = logging.getLogger(__name__)

JSON = "application/json"
API_KEY_HEADER = "x-api-key"
MAX_ANSWER_BYTES = 4 * 1024  # one answer is ~200 bytes
MAX_MASTERY_BYTES = 1024 * 1024  # a user_sequence at kt.inference.MAX_ANSWERS is ~350 KB
MAX_ID_CHARS = 128  # user_id and answer_id, as answer.schema.json
ENDPOINT_TIMEOUT_S = 2.0
MAX_THREADS = 40  # blocking AWS calls at once (anyio's default); bench/api.py --api-threads compares others
MAX_CLOCK_SKEW = timedelta(minutes=5)  # answers from the future would block newer rows (as_of ordering)
BAYES_MODEL_VERSION = f"bayes-beta-{bayes.PRIOR_A:g}-{bayes.PRIOR_B:g}"
GET_FIELDS = (
    "user_id", "mastery", "topic_mastery", "next_skill_recommendation", "predicted_accuracy",
    "model_version", "source", "as_of", "updated_at", "n_interactions",
)  # fmt: skip
ANSWER_FIELDS = ("user_id", "answer_id", "skill_id", "correct", "content_id", "answered_at")
ANSWER_REQUIRED = ("user_id", "answer_id", "skill_id", "correct", "answered_at")
ANSWERED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")

# See the module docstring: the Bayesian row's ordering against Bayesian and DKT rows.
_BAYES_OVER_BAYES = "(#source = :bayes AND (as_of < :as_of OR (as_of = :as_of AND n_interactions < :n)))"
BAYES_CONDITION_DKT_ENABLED = f"attribute_not_exists(user_id) OR {_BAYES_OVER_BAYES}"
BAYES_CONDITION_DKT_DISABLED = f"{BAYES_CONDITION_DKT_ENABLED} OR (#source = :dkt AND as_of < :as_of)"

BATCH_FILE = re.compile(r"/inference/batch/([^/]+)/(input|output)/[^/]+$")


class ApiError(Exception):
    """A 4xx/5xx answer with the body ``{"error": ..., "field": ...}``."""

    def __init__(self, status: int, error: str, field: str | None):
        super().__init__(error)
        self.status, self.error, self.field = status, error, field


# Skills and topics the API speaks


@dataclass(frozen=True)
class Catalog:
    skill_ids: tuple[int, ...]
    skill_topics: dict[int, str]
    origin: str  # where the catalog was read, for the start-up log


def _model_info(settings: Settings) -> dict | None:
    """model.json of the promoted model, read from its model.tar.gz (no torch needed)."""
    current_uri = lake.join(settings.lake, "models", "dkt", "current.json")
    if not lake.exists(current_uri):
        return None
    url = json.loads(lake.read_text(current_uri))["model_data_url"]
    with tarfile.open(fileobj=io.BytesIO(lake.read_bytes(url)), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "model.json")
        return json.load(tar.extractfile(member))


def load_catalog(settings: Settings) -> Catalog:
    """The skills of the promoted model, else of processed/ednet/skills.parquet, else the seed's 8."""
    info = _model_info(settings)
    if info is not None:
        topics = {int(s): t for s, t in info["skill_topics"].items()}
        return Catalog(tuple(int(s) for s in info["skill_ids"]), topics, f"model {info.get('model_version')}")
    skills_uri = lake.join(lake.dataset(settings, "processed"), "skills.parquet")
    if lake.exists(skills_uri):
        import pyarrow.parquet as pq

        fs, path = lake.filesystem(skills_uri)
        table = pq.read_table(path, filesystem=fs, columns=["skill_id", "topic"]).to_pylist()
        topics = {int(r["skill_id"]): r["topic"] for r in table}
        return Catalog(tuple(sorted(topics)), topics, skills_uri)
    topics = {int(s): t for s, t in DEFAULT_SKILL_TOPICS.items()}
    return Catalog(tuple(sorted(topics)), topics, "the seed's skill_mappings")


# Validation


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise ApiError(400, f"{field} must be a string of 1 to {MAX_ID_CHARS} characters", field)
    return value


def parse_answer(payload: object, now: datetime) -> dict:
    """A tutor answer checked as answer.schema.json does, plus a real, not-future answered_at."""
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object", "body")
    for key in payload:
        if key not in ANSWER_FIELDS:
            raise ApiError(400, f"unknown field {key!r}", str(key))
    for key in ANSWER_REQUIRED:
        if key not in payload:
            raise ApiError(400, f"{key} is required", key)
    answer = {"user_id": _check_id(payload["user_id"], "user_id"),
              "answer_id": _check_id(payload["answer_id"], "answer_id")}
    for key in ("skill_id", "content_id"):
        if key in payload and not (_is_int(payload[key]) and payload[key] >= 0):
            raise ApiError(400, f"{key} must be a non-negative integer", key)
    answer["skill_id"] = payload["skill_id"]
    if "content_id" in payload:
        answer["content_id"] = payload["content_id"]
    if not (_is_int(payload["correct"]) and payload["correct"] in (0, 1)):
        raise ApiError(400, "correct must be 0 or 1", "correct")
    answer["correct"] = payload["correct"]
    at = payload["answered_at"]
    if not isinstance(at, str) or not ANSWERED_AT.fullmatch(at):
        raise ApiError(400, "answered_at must be UTC with milliseconds: YYYY-MM-DDTHH:MM:SS.sssZ", "answered_at")
    try:
        moment = datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError as e:
        raise ApiError(400, f"answered_at is not a real time: {e}", "answered_at") from e
    if moment > now + MAX_CLOCK_SKEW:
        raise ApiError(400, f"answered_at is more than {MAX_CLOCK_SKEW} in the future", "answered_at")
    answer["answered_at"] = at
    return answer


def _parse_mastery_request(payload: object, known: set[int] | None) -> list[tuple[int, int]]:
    """The envelope checked as mastery_request.schema.json, the answers by the endpoint's own validator."""
    if isinstance(payload, dict) and "user_id" in payload and not isinstance(payload["user_id"], str):
        raise ApiError(400, "user_id must be a string", "user_id")  # the model also takes numbers; the edge does not
    # kt.inference imports torch: imported on first use until parse_request moves to a torch-free module.
    from kt.inference import RequestError, parse_request

    try:
        return parse_request(payload, None if known is None else dict.fromkeys(known, 0)).sequence
    except RequestError as e:
        raise ApiError(e.status_code, e.error, e.field) from e


# The lake


def append_answer_event(lake_root: str, answer: dict) -> str:
    """Append one answer to events/answers/day=<day>/ and make it durable; return the file's URI.

    A local lake gets one append-only file per process (one write per line, so
    lines never interleave); an s3:// lake, which cannot append, one object per
    answer named by (user_id, answer_id), so a retry rewrites the same object.
    """
    day = answer["answered_at"][:10]
    line = json.dumps({k: answer[k] for k in ANSWER_FIELDS if k in answer}) + "\n"
    prefix = lake.join(lake_root, "events", "answers", f"day={day}")
    if lake.is_s3(lake_root):
        name = hashlib.sha256(f"{answer['user_id']}\0{answer['answer_id']}".encode()).hexdigest()[:32]
        uri = lake.join(prefix, f"api-{name}.jsonl")
        lake.write_text(uri, line)
        return uri
    path = os.path.join(os.path.abspath(prefix), f"api-{os.getpid()}.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def dkt_rows_from_lake(lake_root: str, updated_at: str) -> list[dict]:
    """kt-mastery DKT rows from every batch transform output in the lake (kt-mastery is a projection)."""
    files: dict[str, dict[str, list[str]]] = {}
    for uri in lake.list_files(lake.join(lake_root, "inference", "batch")):
        match = BATCH_FILE.search(uri)
        if match:
            files.setdefault(match.group(1), {"input": [], "output": []})[match.group(2)].append(uri)
    items = []
    for run_date in sorted(files):
        lengths = {}
        for uri in files[run_date]["input"]:
            for line in lake.read_text(uri).splitlines():
                if line.strip():
                    record = json.loads(line)
                    lengths[record["user_id"]] = len(record["user_sequence"])
        for uri in files[run_date]["output"]:
            for line in lake.read_text(uri).splitlines():
                record = json.loads(line) if line.strip() else {"error": "empty line"}
                if "error" not in record:
                    items.append(refresh.mastery_item(record, updated_at, lengths.get(record["user_id"], 0)))
    return items


def rebuild_from_lake(settings: Settings, client: Any) -> dict:
    """Load the lake's answers into kt-history and its transform outputs into kt-mastery (idempotent)."""
    answers = refresh.sync_history(client, settings.history_table, settings.lake)
    rows = dkt_rows_from_lake(settings.lake, _now_iso())
    written = dynamo.write_mastery(client, settings.mastery_table, rows).written
    return {"answers": answers, "dkt_rows": len(rows), "dkt_rows_written": written}


# Mastery


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _answered_at(history_item: dict) -> str:
    return history_item["ts"].split("#", 1)[0]


def get_body(row: dict) -> dict:
    """A kt-mastery row as GET answers it: the fields, order and defaults of get_mastery_response.vtl."""
    nxt = row.get("next_skill_recommendation")
    accuracy = row.get("predicted_accuracy")
    return {
        "user_id": row["user_id"],
        "mastery": {str(s): float(p) for s, p in row.get("mastery", {}).items()},
        "topic_mastery": {str(t): float(p) for t, p in row.get("topic_mastery", {}).items()},
        "next_skill_recommendation": None if nxt is None else int(nxt),
        "predicted_accuracy": None if accuracy is None else float(accuracy),
        "model_version": row.get("model_version", ""),
        "source": row.get("source", ""),
        "as_of": row.get("as_of", ""),
        "updated_at": row.get("updated_at", ""),
        "n_interactions": int(row.get("n_interactions", 0)),
    }


def _client_config(**overrides: Any) -> Config:
    return Config(**{"retries": {"max_attempts": 3, "mode": "standard"}, "max_pool_connections": 64, **overrides})


def _boto_client(settings: Settings, service: str, config: Config) -> Any:
    """Like kt.aws.client, with a config for serving: a pool for the thread pool, few retries, timeouts."""
    kwargs: dict[str, Any] = {"region_name": settings.region, "config": config}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    if settings.runtime == "local":
        kwargs.update(aws.LOCAL_CREDENTIALS)
    return boto3.client(service, **kwargs)


class MasteryService:
    """What the routes do, without HTTP: blocking boto3 calls, run by the routes in worker threads."""

    def __init__(self, settings: Settings, catalog: Catalog, endpoint_url: str | None = None,
                 endpoint_timeout: float = ENDPOINT_TIMEOUT_S, now: Callable[[], datetime] | None = None,
                 max_threads: int = MAX_THREADS):
        self.settings = settings
        self.threads = anyio.CapacityLimiter(max_threads)
        self.catalog = catalog
        self.known_skills = set(catalog.skill_ids)
        self.endpoint_url = endpoint_url
        self.endpoint_timeout = endpoint_timeout
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.dynamodb = _boto_client(settings, "dynamodb", _client_config())
        self.runtime = _boto_client(settings, "sagemaker-runtime", _client_config(
            connect_timeout=endpoint_timeout, read_timeout=endpoint_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        ))  # fmt: skip

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking method in the service's bounded thread pool."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.threads)

    # reads

    def history(self, user_id: str) -> list[dict]:
        return dynamo.user_history(self.dynamodb, self.settings.history_table, user_id)

    def stored_row(self, user_id: str) -> dict | None:
        return dynamo.get_mastery(self.dynamodb, self.settings.mastery_table, user_id)

    def bayes_row(self, user_id: str, history: list[dict]) -> dict:
        """The Bayesian estimate from a user's whole history, as a kt-mastery row (source bayes)."""
        sequence = [(int(h["skill_id"]), int(h["correct"])) for h in history]
        practiced = {s for s, _ in sequence}
        mastery = bayes.skill_mastery(sequence, sorted(self.known_skills | practiced))
        topics = bayes.topic_mastery(sequence, self.catalog.skill_topics)
        body = mastery_response(mastery, practiced, topics, BAYES_MODEL_VERSION)
        return {"user_id": user_id, **body, "source": "bayes", "as_of": _answered_at(history[-1]),
                "updated_at": self.now().isoformat(timespec="seconds"), "n_interactions": len(sequence)}

    def current(self, user_id: str) -> dict | None:
        """The GET body under the rule of the module docstring; None for an unknown user."""
        if self.settings.sagemaker_enabled:
            row = self.stored_row(user_id)
            if row is not None and row.get("source") == "dkt":
                return get_body(row)
        history = self.history(user_id)
        return get_body(self.bayes_row(user_id, history)) if history else None

    # writes

    def record_answer(self, answer: dict) -> str:
        """Lake, kt-history, Bayesian row (see the module docstring); "stored" or "duplicate"."""
        item = dynamo.history_item(answer)
        key = {"user_id": {"S": item["user_id"]}, "ts": {"S": item["ts"]}}
        table = self.settings.history_table
        status = "duplicate"
        if "Item" not in self.dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True):
            append_answer_event(self.settings.lake, answer)
            try:
                self.dynamodb.put_item(TableName=table, Item=dynamo.serialize(item),
                                       ConditionExpression="attribute_not_exists(ts)")
                status = "stored"
            except ClientError as e:
                if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
        # Also after a duplicate: completes the update when a first attempt died before it.
        self.write_bayes_row(self.bayes_row(item["user_id"], self.history(item["user_id"])))
        return status

    def write_bayes_row(self, row: dict) -> bool:
        """Conditional write of a Bayesian row; True when written."""
        values = {":as_of": {"S": row["as_of"]}, ":n": {"N": str(row["n_interactions"])}, ":bayes": {"S": "bayes"}}
        condition = BAYES_CONDITION_DKT_ENABLED
        if not self.settings.sagemaker_enabled:
            condition = BAYES_CONDITION_DKT_DISABLED
            values[":dkt"] = {"S": "dkt"}
        try:
            self.dynamodb.put_item(TableName=self.settings.mastery_table, Item=dynamo.serialize(row),
                                   ConditionExpression=condition, ExpressionAttributeNames={"#source": "source"},
                                   ExpressionAttributeValues=values)
            return True
        except ClientError as e:
            if e.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    # live mastery

    def bayes_live(self, payload: object, fallback_reason: str | None = None) -> dict:
        """POST /api/kt/mastery answered by the Bayesian estimate (same validation as the endpoint)."""
        sequence = _parse_mastery_request(payload, self.known_skills)
        mastery = bayes.skill_mastery(sequence, sorted(self.known_skills))
        topics = bayes.topic_mastery(sequence, self.catalog.skill_topics)
        body = {**mastery_response(mastery, {s for s, _ in sequence}, topics, BAYES_MODEL_VERSION), "source": "bayes"}
        if fallback_reason:
            body["fallback_reason"] = fallback_reason
        return body

    def _invoke_sagemaker(self, raw: bytes) -> tuple[int, bytes]:
        try:
            out = self.runtime.invoke_endpoint(EndpointName=self.settings.endpoint_name, ContentType=JSON,
                                               Accept=JSON, Body=raw)
        except ClientError as e:
            status = e.response.get("OriginalStatusCode")
            if e.response["Error"]["Code"] == "ModelError" and status is not None:
                return int(status), str(e.response.get("OriginalMessage", "")).encode("utf-8")
            raise
        return 200, out["Body"].read()

    async def _invoke(self, raw: bytes) -> tuple[int, bytes]:
        if self.endpoint_url:
            async with httpx.AsyncClient(timeout=self.endpoint_timeout) as client:
                r = await client.post(f"{self.endpoint_url.rstrip('/')}/invocations", content=raw,
                                      headers={"Content-Type": JSON, "Accept": JSON})
            return r.status_code, r.content
        return await anyio.to_thread.run_sync(self._invoke_sagemaker, raw, abandon_on_cancel=True,
                                              limiter=self.threads)

    async def live(self, raw: bytes, payload: object) -> tuple[int, dict]:
        """(status, body) of POST /api/kt/mastery: the endpoint, or the Bayesian estimate."""
        await self.call(_parse_mastery_request, payload, None)  # bad input is a 4xx whoever answers
        if not self.settings.sagemaker_enabled:
            return 200, await self.call(self.bayes_live, payload)
        try:
            with anyio.fail_after(self.endpoint_timeout):
                status, content = await self._invoke(raw)
        except TimeoutError:
            reason = f"the endpoint did not answer within {self.endpoint_timeout:g} s"
        except (httpx.HTTPError, BotoCoreError, ClientError) as e:
            reason = f"the endpoint failed: {type(e).__name__}: {e}"
        else:
            try:
                body = json.loads(content)
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = None
            if status == 200 and isinstance(body, dict) and isinstance(body.get("mastery"), dict):
                return 200, {**body, "source": "dkt"}
            if 400 <= status < 500 and isinstance(body, dict) and "error" in body:
                return status, body
            reason = f"the endpoint answered HTTP {status} with an unusable body"
        log.warning("POST /api/kt/mastery: %s; the Bayesian estimate answers", reason)
        return 200, await self.call(self.bayes_live, payload, reason)

    # the page

    def knowledge_state(self, user_id: str) -> dict | None:
        """What the Knowledge State page shows; None for an unknown user."""
        history = self.history(user_id)
        row = self.stored_row(user_id)
        dkt = row if row is not None and row.get("source") == "dkt" else None
        if not history and not (dkt and self.settings.sagemaker_enabled):
            return None
        bayes_row = self.bayes_row(user_id, history) if history else None
        served = get_body(dkt if dkt is not None and self.settings.sagemaker_enabled else bayes_row)
        counts: dict[str, int] = {}
        for h in history:
            topic = self.catalog.skill_topics.get(int(h["skill_id"]), OTHER_TOPIC)
            counts[topic] = counts.get(topic, 0) + 1
        # The topic, then the skill inside it (kt.tutor): the page never recommends a skill of another topic.
        next_topic = tutor.select_weakest_topic({**served, "answers_by_topic": counts})
        practiced_skills = {int(h["skill_id"]) for h in history}
        return {
            "user_id": user_id,
            "served": served,
            "dkt": get_body(dkt) if dkt is not None else None,
            "bayes": get_body(bayes_row) if bayes_row is not None else None,
            "answers_by_topic": counts,
            "next_topic": next_topic,
            "next_skill": (served["next_skill_recommendation"] if next_topic is None  # only unmapped skills
                           else tutor.select_weakest_skill(served, next_topic, self.catalog.skill_topics,
                                                           practiced_skills)),
            "skill_topics": self.catalog.skill_topics,
        }


# HTTP


def _error(status: int, error: str, field: str | None) -> JSONResponse:
    return JSONResponse({"error": error, "field": field}, status_code=status)


async def _read_json(request: Request, limit: int) -> tuple[bytes, object]:
    """The raw body and its JSON, enforcing the content type and the size limit while reading."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != JSON:
        raise ApiError(415, f"unsupported content type {content_type or 'none'!r}; use {JSON}", "Content-Type")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, f"the body is larger than {limit} bytes", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is larger than {limit} bytes", "body")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return raw, json.loads(raw)
    except UnicodeDecodeError as e:
        raise ApiError(400, "the body is not UTF-8", "body") from e
    except json.JSONDecodeError as e:
        raise ApiError(400, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", "body") from e


def _user_id_param(request: Request) -> str:
    values = request.query_params.getlist("user_id")
    if not values or values[0] == "":
        raise ApiError(400, "Missing required request parameters: [user_id]", "user_id")
    if len(values) > 1:
        raise ApiError(400, "user_id is given more than once", "user_id")
    return _check_id(values[0], "user_id")


class ApiKeyMiddleware:
    """403 unless x-api-key matches (constant-time compare); /static/ is open. No key configured: all open."""

    def __init__(self, app: Any, api_key: str | None):
        self.app = app
        self.expected = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.expected is not None and not scope["path"].startswith("/static/"):
            given = dict(scope["headers"]).get(API_KEY_HEADER.encode("latin-1"), b"")
            if not hmac.compare_digest(given, self.expected):
                response = _error(403, f"missing or invalid {API_KEY_HEADER} header", API_KEY_HEADER)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings, *, catalog: Catalog | None = None, endpoint_url: str | None = None,
               endpoint_timeout: float = ENDPOINT_TIMEOUT_S, now: Callable[[], datetime] | None = None,
               max_threads: int = MAX_THREADS) -> Starlette:
    """The ASGI app. Tables must exist (``main`` creates and fills them locally; Terraform on AWS)."""
    if not settings.api_key:
        if settings.runtime == "aws":
            raise ConfigError(f"{env_var('api_key')}: the aws runtime needs an API key for `kt api`")
        log.warning("%s is not set: every route is open to anyone who can reach this port "
                    "(local development only; set it to require the %s header)", env_var("api_key"), API_KEY_HEADER)
    catalog = catalog or load_catalog(settings)
    service = MasteryService(settings, catalog, endpoint_url, endpoint_timeout, now, max_threads)
    log.info("mastery API: %d skills from %s; DKT %s%s", len(catalog.skill_ids), catalog.origin,
             "enabled" if settings.sagemaker_enabled else "disabled (the Bayesian estimate answers)",
             f", endpoint {endpoint_url or settings.endpoint_name}" if settings.sagemaker_enabled else "")

    async def get_mastery(request: Request) -> Response:
        body = await service.call(service.current, _user_id_param(request))
        if body is None:
            return _error(404, "unknown user_id", "user_id")
        return JSONResponse(body)

    async def post_mastery(request: Request) -> Response:
        raw, payload = await _read_json(request, MAX_MASTERY_BYTES)
        status, body = await service.live(raw, payload)
        return JSONResponse(body, status_code=status)

    async def mastery(request: Request) -> Response:
        return await (post_mastery(request) if request.method == "POST" else get_mastery(request))

    async def post_answer(request: Request) -> Response:
        _, payload = await _read_json(request, MAX_ANSWER_BYTES)
        answer = parse_answer(payload, service.now())
        return JSONResponse({"status": await service.call(service.record_answer, answer)})

    async def knowledge_state(request: Request) -> Response:
        user_id = _check_id(request.path_params["user_id"], "user_id")
        state = await service.call(service.knowledge_state, user_id)
        if state is None:
            return HTMLResponse(web.not_found_page(user_id), status_code=404)
        return HTMLResponse(web.knowledge_state_page(state))

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.error, exc.field)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        # an unknown route or method: JSON like every other answer (405 keeps its Allow header)
        return JSONResponse({"error": exc.detail, "field": None}, status_code=exc.status_code, headers=exc.headers)

    async def aws_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s: AWS call failed: %s", request.method, request.url.path, exc)
        return _error(502, "mastery store or endpoint unavailable", None)

    app = Starlette(
        routes=[
            Route("/api/kt/mastery", mastery, methods=["GET", "POST"]),
            Route("/api/kt/answers", post_answer, methods=["POST"]),
            Route("/knowledge-state/{user_id}", knowledge_state, methods=["GET"]),
            Mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static"),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error, ClientError: aws_error,
                            BotoCoreError: aws_error},
        middleware=[Middleware(ApiKeyMiddleware, api_key=settings.api_key)],
    )
    app.state.service = service
    return app


def main(settings: Settings, host: str = "127.0.0.1", port: int = 8000, endpoint_url: str | None = None) -> int:
    """`kt api`: locally, create the tables and load them from the lake, then serve until interrupted."""
    import uvicorn

    with aws.local_aws(settings) as settings:
        if settings.runtime == "local":
            client = aws.client(settings, "dynamodb")
            dynamo.ensure_tables(client, settings.history_table, settings.mastery_table)
            log.info("loaded from the lake %s: %s", settings.lake, rebuild_from_lake(settings, client))
        app = create_app(settings, endpoint_url=endpoint_url)
        uvicorn.run(app, host=host, port=port, log_level="info")
    return 0

