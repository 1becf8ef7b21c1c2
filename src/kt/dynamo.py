"""The two DynamoDB tables (docs/contracts.md §7): tutor answers (kt-history) and mastery (kt-mastery).

An answer is stored once per (user_id, answer_id), whatever its answered_at:
``answer_transaction`` writes it with two marker items (``answer#<answer_id>``
and ``content#<skill>#<correct>#<content>#<answer_id>``, both conditional on
absence) and the Phase 1 counters of the user's kt-mastery row (``ADD``), in
one TransactWriteItems: the request API Gateway's template sends on AWS and
the local twin sends to moto. ``answer_outcome`` reads the cancellation
reasons: both markers there is a duplicate, only the id marker a conflict.

Mastery writes are conditional so that an older ``as_of`` never replaces a
newer row and a repeated refresh changes nothing. BatchWriteItem cannot carry
conditions, so rows go as conditional UpdateItems, 25 at a time in parallel;
throttling is retried by the client's adaptive backoff and, past it, by
``put_mastery_conditional``'s own (nothing is dropped: a write that still fails
fails the load, and the watermark stays).
"""

from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Iterator

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

BATCH = 25
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# kt-history sort keys: answers start with answered_at (a digit), markers with a lowercase letter.
ID_MARKER = "answer#"
CONTENT_MARKER = "content#"
MARKERS_FROM = "a"  # every answer's ts sorts before it, every marker's after it
NO_CONTENT = "-"  # the content marker's content_id when the answer has none

# Phase 1 counters on a kt-mastery row (top-level attributes: ADD cannot create a nested map).
ANSWERS_PREFIX = "answers#"  # answers#<skill_id>: answers on the skill
RIGHT_PREFIX = "right#"  # right#<skill_id>: correct answers on the skill
BAYES_N = "bayes_n"  # every answer counted
BAYES_AS_OF = "bayes_as_of"  # answered_at of the last answer counted
ANSWER_UPDATE = f"ADD #answers :one, #right :correct, {BAYES_N} :one SET {BAYES_AS_OF} = :answered_at"

# Replace a mastery row's DKT fields only with newer evidence, the same evidence scored by another model/source,
# or more of it: a late answer (answered before the row's as_of) leaves as_of as it was but adds to history_items.
MASTERY_CONDITION = (
    "attribute_not_exists(as_of) OR as_of < :as_of"
    " OR (as_of = :as_of AND (model_version <> :model_version OR #source <> :source"
    " OR history_items < :history_items))"
)
# kt-mastery attributes of the incremental refresh (docs/contracts.md §7.2): what the row covers, and the state.
HISTORY_TS = "history_ts"  # kt-history ts of the last answer the row (and its state) covers
HISTORY_ITEMS = "history_items"  # kt-history answers it covers (answers on skills the model lacks included)
DKT_STATE = "dkt_state"  # the transform's "state" after history_ts (docs/contracts.md §6.4), absent when none
STATE_KEYS = ("user_id", DKT_STATE, HISTORY_TS, HISTORY_ITEMS)
THROTTLED = ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded")
THROTTLE_ATTEMPTS = 8
THROTTLE_BACKOFF_S = 0.1  # first wait after a throttled write; doubles each time, at most 5 s


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def serialize(item: dict) -> dict:
    """Plain Python -> DynamoDB attribute values (floats as exact decimals)."""
    return {k: _serializer.serialize(_to_dynamo(v)) for k, v in item.items() if v is not None}


def deserialize(item: dict) -> dict:
    return {k: _from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


def ensure_tables(client: Any, history_table: str, mastery_table: str) -> None:
    """Create both tables with the keys of docs/contracts.md §7 if missing (local runs; Terraform does it on AWS)."""
    existing = {n for page in client.get_paginator("list_tables").paginate() for n in page["TableNames"]}
    if history_table not in existing:
        client.create_table(
            TableName=history_table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("user_id", "ts", "day")],
            KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}, {"AttributeName": "ts", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[{
                "IndexName": "by_day",
                "KeySchema": [{"AttributeName": "day", "KeyType": "HASH"}, {"AttributeName": "ts", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }],
        )
    if mastery_table not in existing:
        client.create_table(
            TableName=mastery_table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
        )


def history_item(answer: dict) -> dict:
    """A tutor answer (as the API and the lake events carry it) as a kt-history item."""
    return {
        "user_id": str(answer["user_id"]),
        "ts": f"{answer['answered_at']}#{answer['answer_id']}",
        "day": answer["answered_at"][:10],
        "answer_id": str(answer["answer_id"]),
        "skill_id": int(answer["skill_id"]),
        "correct": int(answer["correct"]),
        "content_id": int(answer["content_id"]) if answer.get("content_id") is not None else None,
    }


def marker_items(item: dict) -> list[dict]:
    """The id and content markers of a kt-history item (no ``day``: they stay out of the by_day index)."""
    content = NO_CONTENT if item.get("content_id") is None else item["content_id"]
    return [
        {"user_id": item["user_id"], "ts": f"{ID_MARKER}{item['answer_id']}", "answered_at": answered_at(item)},
        {"user_id": item["user_id"],
         "ts": f"{CONTENT_MARKER}{item['skill_id']}#{item['correct']}#{content}#{item['answer_id']}"},
    ]


def answered_at(item: dict) -> str:
    """answered_at of a kt-history answer item (the part of ts before the first #)."""
    return item["ts"].split("#", 1)[0]


def answer_transaction(answer: dict, history_table: str, mastery_table: str) -> dict:
    """The TransactWriteItems request that stores one answer (the module docstring; post_answer_request.vtl)."""
    item = history_item(answer)
    absent = "attribute_not_exists(ts)"
    puts = [{"Put": {"TableName": history_table, "Item": serialize(i), "ConditionExpression": absent}}
            for i in [*marker_items(item), item]]
    update = {"Update": {
        "TableName": mastery_table,
        "Key": {"user_id": {"S": item["user_id"]}},
        "UpdateExpression": ANSWER_UPDATE,
        "ExpressionAttributeNames": {"#answers": f"{ANSWERS_PREFIX}{item['skill_id']}",
                                     "#right": f"{RIGHT_PREFIX}{item['skill_id']}"},
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":correct": {"N": str(item["correct"])},
                                      ":answered_at": {"S": answered_at(item)}},
    }}  # fmt: skip
    return {"TransactItems": [*puts, update]}


def answer_outcome(reasons: list[dict]) -> str | None:
    """"duplicate", "conflict" or None (not an answer's own doing) from a cancelled answer_transaction's reasons."""
    failed = [r.get("Code") == "ConditionalCheckFailed" for r in reasons]
    if len(failed) < 3:
        return None
    if failed[0]:
        return "duplicate" if failed[1] else "conflict"
    return "duplicate" if failed[2] else None  # an answer stored before the markers existed


def first_answers(answers: Iterable[dict]) -> list[dict]:
    """The first answer of each (user_id, answer_id), in order: an answer counts once, whatever a retry re-stamped."""
    first: dict[tuple[str, str], dict] = {}
    for answer in answers:
        first.setdefault((str(answer["user_id"]), str(answer["answer_id"])), answer)
    return list(first.values())


def put_history(client: Any, table: str, answers: Iterable[dict]) -> int:
    """Batch-write answers and their markers, the first of each (user_id, answer_id); return how many answers.

    The first line wins, as the markers make the first write win in the table (first_answers); one item per key
    also keeps a batch valid (DynamoDB rejects a batch holding the same key twice). Rewriting the same items is
    harmless.
    """
    items = [history_item(a) for a in first_answers(answers)]
    writes = [w for i in items for w in (i, *marker_items(i))]
    for start in range(0, len(writes), BATCH):
        requests = [{"PutRequest": {"Item": serialize(i)}} for i in writes[start : start + BATCH]]
        _batch_write(client, table, requests)
    return len(items)


def bayes_counters(history: list[dict]) -> dict:
    """The Phase 1 counters of a kt-mastery row from a user's answers (what answer_transaction ADDs up)."""
    counters: dict[str, Any] = {BAYES_N: len(history)}
    for h in history:
        for prefix, add in ((ANSWERS_PREFIX, 1), (RIGHT_PREFIX, int(h["correct"]))):
            name = f"{prefix}{int(h['skill_id'])}"
            counters[name] = counters.get(name, 0) + add
    if history:
        counters[BAYES_AS_OF] = max(answered_at(h) for h in history)
    return counters


def skill_counts(row: dict) -> dict[int, tuple[int, int]]:
    """skill id -> (answers, right) from a kt-mastery row's Phase 1 counters."""
    return {int(name[len(ANSWERS_PREFIX):]): (int(n), int(row.get(f"{RIGHT_PREFIX}{name[len(ANSWERS_PREFIX):]}", 0)))
            for name, n in row.items() if name.startswith(ANSWERS_PREFIX)}


def set_bayes_counters(client: Any, history_table: str, mastery_table: str) -> int:
    """Set every user's Phase 1 counters from kt-history (after loading it from the lake); return the users."""
    by_user: dict[str, list[dict]] = {}
    for h in scan_all(client, history_table):
        if h["ts"] < MARKERS_FROM:
            by_user.setdefault(h["user_id"], []).append(h)
    for user_id, history in by_user.items():
        counters = bayes_counters(history)
        names = {f"#c{i}": name for i, name in enumerate(counters)}
        client.update_item(
            TableName=mastery_table, Key={"user_id": {"S": user_id}},
            UpdateExpression="SET " + ", ".join(f"#c{i} = :c{i}" for i in range(len(counters))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":c{i}": serialize({"v": v})["v"] for i, v in enumerate(counters.values())},
        )  # fmt: skip
    return len(by_user)


def _backoff(attempt: int) -> None:
    """Wait before retrying what DynamoDB did not take (throttled): exponential, capped at 5 s."""
    time.sleep(min(5.0, THROTTLE_BACKOFF_S * 2**attempt))


def _batch_write(client: Any, table: str, requests: list[dict], attempts: int = THROTTLE_ATTEMPTS) -> None:
    pending = {table: requests}
    for attempt in range(attempts):
        unprocessed = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        if not unprocessed:
            return
        pending = unprocessed
        _backoff(attempt)
    raise RuntimeError(f"{table}: {len(pending.get(table, []))} items still unprocessed after {attempts} attempts")


def _query_pages(client: Any, **kwargs: Any) -> Iterator[dict]:
    """Every page of a query, one at a time (a day of by_day can hold millions of answers)."""
    while True:
        page = client.query(**kwargs)
        yield page
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _query_all(client: Any, **kwargs: Any) -> list[dict]:
    return [item for page in _query_pages(client, **kwargs) for item in page.get("Items", [])]


def users_active_on(client: Any, table: str, day: str) -> set[str]:
    """Users with an answer on that day (the by_day index), read page by page: only the ids are kept."""
    users: set[str] = set()
    for page in _query_pages(
        client, TableName=table, IndexName="by_day", KeyConditionExpression="#d = :d",
        ExpressionAttributeNames={"#d": "day"}, ExpressionAttributeValues={":d": {"S": day}},
    ):
        users.update(i["user_id"]["S"] for i in page.get("Items", []))
    return users


def user_history(client: Any, table: str, user_id: str, after_ts: str | None = None) -> list[dict]:
    """A user's answers in time order (not the markers); with ``after_ts``, only those whose ts sorts after it."""
    condition, values = "user_id = :u AND ts < :markers", {":u": {"S": user_id}, ":markers": {"S": MARKERS_FROM}}
    if after_ts is not None:  # one condition per sort key: BETWEEN, then the bound itself dropped
        condition, values[":after"] = "user_id = :u AND ts BETWEEN :after AND :markers", {"S": after_ts}
    items = _query_all(client, TableName=table, KeyConditionExpression=condition,
                       ExpressionAttributeValues=values, ConsistentRead=True)
    return [h for h in map(deserialize, items) if after_ts is None or h["ts"] > after_ts]


def count_answers_until(client: Any, table: str, user_id: str, ts: str) -> int:
    """How many of a user's answers sort at or before ts (a COUNT query: nothing but the number comes back)."""
    return sum(page["Count"] for page in _query_pages(
        client, TableName=table, KeyConditionExpression="user_id = :u AND ts <= :ts", Select="COUNT",
        ExpressionAttributeValues={":u": {"S": user_id}, ":ts": {"S": ts}}, ConsistentRead=True,
    ))


def get_state(client: Any, table: str, user_id: str) -> dict | None:
    """The incremental refresh's attributes of a user's kt-mastery row (STATE_KEYS), or None before its first night.

    One GetItem per user (a BatchGetItem would save requests, not read units); build_inputs runs them in threads.
    """
    names = {f"#k{i}": k for i, k in enumerate(STATE_KEYS)}
    item = client.get_item(TableName=table, Key={"user_id": {"S": user_id}}, ConsistentRead=True,
                           ProjectionExpression=", ".join(names), ExpressionAttributeNames=names).get("Item")
    row = deserialize(item) if item else {}
    return row if HISTORY_TS in row else None


def get_mastery(client: Any, table: str, user_id: str) -> dict | None:
    item = client.get_item(TableName=table, Key={"user_id": {"S": user_id}}, ConsistentRead=True).get("Item")
    return deserialize(item) if item else None


@dataclass
class WriteResult:
    written: int = 0
    skipped_stale: int = 0  # the table already had this or newer evidence


def put_mastery_conditional(client: Any, table: str, item: dict) -> bool:
    """Write one mastery row unless the table holds newer (or identical) evidence; True when written.

    An UpdateItem of the row's fields, not a PutItem: the Phase 1 counters on the row stay. A field given as
    None is removed (a transform that returned no state leaves none behind). A throttled write is retried with
    backoff (THROTTLE_ATTEMPTS in all, beyond the client's own retries), then raised: never dropped.
    """
    fields = {k: v for k, v in item.items() if k != "user_id"}
    names = {f"#f{i}": k for i, k in enumerate(fields)}
    values = {f":f{i}": serialize({"v": v})["v"] for i, v in enumerate(fields.values()) if v is not None}
    sets = [f"#f{i} = :f{i}" for i in range(len(fields)) if f":f{i}" in values]
    removes = [f"#f{i}" for i in range(len(fields)) if f":f{i}" not in values]
    request = {
        "TableName": table,
        "Key": {"user_id": {"S": item["user_id"]}},
        "UpdateExpression": "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else ""),
        "ConditionExpression": MASTERY_CONDITION,
        "ExpressionAttributeNames": {**names, "#source": "source"},
        "ExpressionAttributeValues": {
            **values,
            ":as_of": {"S": item["as_of"]},
            ":model_version": {"S": item["model_version"]},
            ":source": {"S": item["source"]},
            ":history_items": {"N": str(item.get(HISTORY_ITEMS) or 0)},
        },
    }
    for attempt in itertools.count(1):
        try:
            client.update_item(**request)
            return True
        except ClientError as e:
            code = e.response["Error"]["Code"]
            if code == "ConditionalCheckFailedException":
                return False
            if code not in THROTTLED or attempt == THROTTLE_ATTEMPTS:
                raise
            log.warning("%s: write of %s throttled (%s), retrying", table, item["user_id"], code)
            _backoff(attempt - 1)


def write_mastery(client: Any, table: str, items: list[dict], workers: int = 8) -> WriteResult:
    """Conditional writes of mastery rows, BATCH at a time in parallel, a user's rows one after the other.

    DynamoDB checks a condition and writes atomically, but moto (the local
    runtime's DynamoDB) does not: two rows of one user written at the same time
    could both pass the check and the older land last. So the n-th row of each
    user goes in the n-th round, and the rounds run in turn: the outcome is the
    sequential one everywhere.
    """
    rounds: list[list[dict]] = []
    seen: dict[str, int] = {}
    for item in items:
        n = seen[item["user_id"]] = seen.get(item["user_id"], -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(item)
    result = WriteResult()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in (chunk[start : start + BATCH] for chunk in rounds for start in range(0, len(chunk), BATCH)):
            for written in pool.map(lambda i: put_mastery_conditional(client, table, i), batch):
                if written:
                    result.written += 1
                else:
                    result.skipped_stale += 1
    return result


def scan_all(client: Any, table: str) -> list[dict]:
    """Every item of a table (tests, summaries, rebuilds)."""
    items: list[dict] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        items.extend(deserialize(i) for i in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
