"""The mastery service: what the API's routes do, without HTTP (kt-history, kt-mastery, the lake, the endpoint).

Phase 1 as on AWS: ``record_answer`` sends ``kt.dynamo.answer_transaction``,
the request API Gateway's template sends, so an answer is stored once per
(user_id, answer_id) and counted once in the counters of the user's kt-mastery
row; ``current`` answers GET from that one row as get_mastery_response.vtl
does (``get_body``). DKT rows are written by the nightly refresh over the same
row (an UpdateItem: the counters stay); Bayesian estimates are never written,
only computed from the counters, so they can never replace a DKT row.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import anyio
import boto3
import httpx
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kt import aws, bayes, dynamo, lake, refresh, tutor
from kt.api_validation import ANSWER_FIELDS, JSON, ApiError, _parse_mastery_request
from kt.config import Settings
from kt.mastery import response as mastery_response
from kt.topics import DEFAULT_SKILL_TOPICS

log = logging.getLogger(__name__)

ENDPOINT_TIMEOUT_S = 2.0
MAX_THREADS = 40  # blocking AWS calls at once (anyio's default); bench/api.py --api-threads compares others
BAYES_MODEL_VERSION = f"bayes-beta-{bayes.PRIOR_A:g}-{bayes.PRIOR_B:g}"
GET_FIELDS = (
    "user_id", "mastery", "topic_mastery", "answers_by_topic", "next_skill_recommendation", "predicted_accuracy",
    "model_version", "source", "as_of", "updated_at", "n_interactions",
)  # fmt: skip

CONFLICT_ERROR = "answer_id was already stored with another skill_id, correct or content_id"


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


def rebuild_from_lake(settings: Settings, client: Any) -> dict:
    """Load the lake's answers into kt-history and its transform outputs into kt-mastery (idempotent)."""
    answers = refresh.sync_history(client, settings.history_table, settings.lake)
    counted = dynamo.set_bayes_counters(client, settings.history_table, settings.mastery_table)
    rows = refresh.dkt_rows_from_lake(settings.lake)  # the rows kt.refresh.rebuild_mastery writes
    written = dynamo.write_mastery(client, settings.mastery_table, rows).written
    return {"answers": answers, "users_counted": counted, "dkt_rows": len(rows), "dkt_rows_written": written}


# Mastery


def dkt_body(row: dict, skill_topics: dict[int, str]) -> dict:
    """A DKT kt-mastery row as GET answers it (get_mastery_response.vtl); answers_by_topic from its counters."""
    nxt = row.get("next_skill_recommendation")
    accuracy = row.get("predicted_accuracy")
    return {
        "user_id": row["user_id"],
        "mastery": {str(s): float(p) for s, p in row.get("mastery", {}).items()},
        "topic_mastery": {str(t): float(p) for t, p in row.get("topic_mastery", {}).items()},
        "answers_by_topic": bayes.answers_by_topic(dynamo.skill_counts(row), skill_topics),
        "next_skill_recommendation": None if nxt is None else int(nxt),
        "predicted_accuracy": None if accuracy is None else float(accuracy),
        "model_version": row.get("model_version", ""),
        "source": row.get("source", ""),
        "as_of": row.get("as_of", ""),
        "updated_at": row.get("updated_at", ""),
        "n_interactions": int(row.get("n_interactions", 0)),
    }


def bayes_body(row: dict, catalog: Catalog) -> dict | None:
    """The Bayesian estimate computed from a kt-mastery row's counters (get_mastery_response.vtl); None: no answer.

    as_of and updated_at are the last counted answer's answered_at: the estimate is computed at every read.
    """
    if not row.get(dynamo.BAYES_N):
        return None
    numbers = bayes.estimate(dynamo.skill_counts(row), list(catalog.skill_ids), catalog.skill_topics)
    as_of = row.get(dynamo.BAYES_AS_OF, "")
    return {"user_id": row["user_id"], **{k: numbers[k] for k in GET_FIELDS[1:6]}, "model_version": BAYES_MODEL_VERSION,
            "source": "bayes", "as_of": as_of, "updated_at": as_of, "n_interactions": int(row[dynamo.BAYES_N])}


def get_body(row: dict | None, catalog: Catalog, dkt_enabled: bool) -> dict | None:
    """GET's body for a kt-mastery row (None: 404): its DKT row when DKT is enabled, else its Bayesian estimate."""
    if row is None:
        return None
    if dkt_enabled and row.get("source") == "dkt":
        return dkt_body(row, catalog.skill_topics)
    return bayes_body(row, catalog)


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

    def current(self, user_id: str) -> dict | None:
        """The GET body from the user's kt-mastery row (``get_body``); None for an unknown user."""
        return get_body(self.stored_row(user_id), self.catalog, self.settings.sagemaker_enabled)

    # writes

    def record_answer(self, answer: dict) -> str:
        """Lake, then kt-history and the counters in one transaction (kt.dynamo); "stored" or "duplicate".

        A known answer_id is answered before the lake is touched: the same content is a duplicate (whatever its
        answered_at), other content a 409. A crash after the lake append is repaired by the client's retry (the
        lake then holds the line twice; its readers keep the first per answer_id).
        """
        item = dynamo.history_item(answer)
        table = self.settings.history_table
        id_marker, content_marker = (dynamo.serialize({"user_id": m["user_id"], "ts": m["ts"]})
                                     for m in dynamo.marker_items(item))
        if "Item" in self.dynamodb.get_item(TableName=table, Key=id_marker, ConsistentRead=True):
            same = "Item" in self.dynamodb.get_item(TableName=table, Key=content_marker, ConsistentRead=True)
            return self._answer_status("duplicate" if same else "conflict")
        request = dynamo.answer_transaction(answer, table, self.settings.mastery_table)  # converted before the append
        append_answer_event(self.settings.lake, answer)
        try:
            self.dynamodb.transact_write_items(**request)
        except ClientError as e:
            outcome = dynamo.answer_outcome(e.response.get("CancellationReasons") or [])
            if e.response["Error"]["Code"] != "TransactionCanceledException" or outcome is None:
                raise
            return self._answer_status(outcome)
        return "stored"

    @staticmethod
    def _answer_status(outcome: str) -> str:
        """"duplicate" as it is; a conflict is a 409 (the same text as post_answer_error.vtl)."""
        if outcome == "conflict":
            raise ApiError(409, CONFLICT_ERROR, "answer_id")
        return outcome

    # live mastery

    def bayes_live(self, payload: object, fallback_reason: str | None = None) -> dict:
        """POST /api/kt/mastery answered by the Bayesian estimate (same validation as the endpoint)."""
        sequence = _parse_mastery_request(payload, self.known_skills)
        if isinstance(payload, dict) and payload.get("state") is not None:
            raise ApiError(409, "the Bayesian estimate cannot continue a DKT state: send the whole history "
                                "without state", "state")
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
        row = self.stored_row(user_id)
        served = get_body(row, self.catalog, self.settings.sagemaker_enabled)
        if served is None:
            return None
        dkt = dkt_body(row, self.catalog.skill_topics) if row.get("source") == "dkt" else None
        practiced_skills = set(dynamo.skill_counts(row))
        # The topic, then the skill inside it (kt.tutor): the page never recommends a skill of another topic.
        next_topic = tutor.select_weakest_topic(served)
        return {
            "user_id": user_id,
            "served": served,
            "dkt": dkt,
            "bayes": bayes_body(row, self.catalog),
            "answers_by_topic": served["answers_by_topic"],
            "next_topic": next_topic,
            "next_skill": (served["next_skill_recommendation"] if next_topic is None  # only unmapped skills
                           else tutor.select_weakest_skill(served, next_topic, self.catalog.skill_topics,
                                                           practiced_skills)),
            "skill_topics": self.catalog.skill_topics,
        }
