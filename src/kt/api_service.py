"""The mastery service: what the API's routes do, without HTTP (kt-history, kt-mastery, the lake, the endpoint).

Bayesian rows never replace newer evidence. A Bayesian write replaces a
Bayesian row with an older last answer, or the same last answer and fewer
answers (a late answer arriving out of order). It never replaces a DKT row
while DKT is enabled (the nightly refresh owns it; live DKT is
``POST /api/kt/mastery``); with DKT disabled it replaces a DKT row whose
``as_of`` is strictly older. The refresh's own condition
(``kt.dynamo.MASTERY_CONDITION``) lets a DKT row replace a Bayesian row with
the same or an older ``as_of``.
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
from kt.topics import DEFAULT_SKILL_TOPICS, OTHER_TOPIC

log = logging.getLogger(__name__)

ENDPOINT_TIMEOUT_S = 2.0
MAX_THREADS = 40  # blocking AWS calls at once (anyio's default); bench/api.py --api-threads compares others
BAYES_MODEL_VERSION = f"bayes-beta-{bayes.PRIOR_A:g}-{bayes.PRIOR_B:g}"
GET_FIELDS = (
    "user_id", "mastery", "topic_mastery", "next_skill_recommendation", "predicted_accuracy",
    "model_version", "source", "as_of", "updated_at", "n_interactions",
)  # fmt: skip

# See the module docstring: the Bayesian row's ordering against Bayesian and DKT rows.
_BAYES_OVER_BAYES = "(#source = :bayes AND (as_of < :as_of OR (as_of = :as_of AND n_interactions < :n)))"
BAYES_CONDITION_DKT_ENABLED = f"attribute_not_exists(user_id) OR {_BAYES_OVER_BAYES}"
BAYES_CONDITION_DKT_DISABLED = f"{BAYES_CONDITION_DKT_ENABLED} OR (#source = :dkt AND as_of < :as_of)"


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
    skills_uri = lake.join(settings.lake, "processed", "ednet", "skills.parquet")
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
    rows = refresh.dkt_rows_from_lake(settings.lake)  # the rows kt.refresh.rebuild_mastery writes
    written = dynamo.write_mastery(client, settings.mastery_table, rows).written
    return {"answers": answers, "dkt_rows": len(rows), "dkt_rows_written": written}


# Mastery


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
        stored = dynamo.serialize(item)  # converted before the append: what the lake holds can be stored
        key = {"user_id": {"S": item["user_id"]}, "ts": {"S": item["ts"]}}
        table = self.settings.history_table
        status = "duplicate"
        if "Item" not in self.dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True):
            append_answer_event(self.settings.lake, answer)
            try:
                self.dynamodb.put_item(TableName=table, Item=stored,
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

