"""The two DynamoDB tables (docs/contracts.md §7): tutor answers (kt-history) and mastery (kt-mastery).

Mastery writes are conditional so that an older ``as_of`` never replaces a
newer row and a repeated refresh changes nothing. BatchWriteItem cannot carry
conditions, so items go as conditional PutItems, 25 at a time in parallel,
with throttling retried by the client's adaptive backoff.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

BATCH = 25
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# Replace a mastery row only with newer evidence, or the same evidence scored by another model/source.
MASTERY_CONDITION = (
    "attribute_not_exists(user_id) OR as_of < :as_of"
    " OR (as_of = :as_of AND (model_version <> :model_version OR #source <> :source))"
)


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


def put_history(client: Any, table: str, answers: Iterable[dict]) -> int:
    """Batch-write answers (same key, same content: rewriting is harmless); return the count of distinct answers."""
    # One item per key: a batch holding the same key twice is rejected by DynamoDB.
    items = list({(i["user_id"], i["ts"]): i for i in map(history_item, answers)}.values())
    for start in range(0, len(items), BATCH):
        requests = [{"PutRequest": {"Item": serialize(i)}} for i in items[start : start + BATCH]]
        _batch_write(client, table, requests)
    return len(items)


def _batch_write(client: Any, table: str, requests: list[dict], attempts: int = 8) -> None:
    pending = {table: requests}
    for attempt in range(attempts):
        unprocessed = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        if not unprocessed:
            return
        pending = unprocessed
        time.sleep(min(2.0, 0.05 * 2**attempt))  # backoff before retrying what DynamoDB did not take
    raise RuntimeError(f"{table}: {len(pending.get(table, []))} items still unprocessed after {attempts} attempts")


def _query_all(client: Any, **kwargs: Any) -> list[dict]:
    items: list[dict] = []
    while True:
        page = client.query(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def users_active_on(client: Any, table: str, day: str) -> set[str]:
    """Users with an answer on that day (the by_day index)."""
    items = _query_all(
        client, TableName=table, IndexName="by_day", KeyConditionExpression="#d = :d",
        ExpressionAttributeNames={"#d": "day"}, ExpressionAttributeValues={":d": {"S": day}},
    )
    return {i["user_id"]["S"] for i in items}


def user_history(client: Any, table: str, user_id: str) -> list[dict]:
    """All answers of a user in time order."""
    items = _query_all(
        client, TableName=table, KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": user_id}}, ConsistentRead=True,
    )
    return [deserialize(i) for i in items]


def get_mastery(client: Any, table: str, user_id: str) -> dict | None:
    item = client.get_item(TableName=table, Key={"user_id": {"S": user_id}}, ConsistentRead=True).get("Item")
    return deserialize(item) if item else None


@dataclass
class WriteResult:
    written: int = 0
    skipped_stale: int = 0  # the table already had this or newer evidence


def put_mastery_conditional(client: Any, table: str, item: dict) -> bool:
    """Write one mastery row unless the table holds newer (or identical) evidence; True when written."""
    try:
        client.put_item(
            TableName=table,
            Item=serialize(item),
            ConditionExpression=MASTERY_CONDITION,
            ExpressionAttributeNames={"#source": "source"},
            ExpressionAttributeValues={
                ":as_of": {"S": item["as_of"]},
                ":model_version": {"S": item["model_version"]},
                ":source": {"S": item["source"]},
            },
        )
        return True
    except ClientError as e:
        if e.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise


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
