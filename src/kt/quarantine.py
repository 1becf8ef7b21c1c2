"""The lake's JSON Lines read without trusting them: a bad line is set aside with a reason, the rest served.

    records, bad = quarantine.read_jsonl(uri, check)

No line of ``events/answers/`` or of the batch transform's inputs and outputs
may stop a reader (`kt api` at start, `kt refresh`, `kt chart`): a line that is
blank, not UTF-8, not JSON within ``kt.bounds``' limits, or refused by the
caller's ``check`` is quarantined. Quarantine is a report, not a move: the line
stays where it is (the lake is append-only), each reader skips it, logs a
warning per file with the counts by reason, and `kt lake check` lists them all
(docs/contracts.md §3.1).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from kt import bounds, lake

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1024 * 1024  # the longest legitimate line, a batch input of MAX_ANSWERS answers, is ~350 KB
_POSITION = re.compile(r" at line \d+ column \d+| at column \d+")


class BadLine(ValueError):
    """Raised by a check: why a record cannot be served."""


@dataclass(frozen=True)
class Quarantined:
    uri: str
    line: int  # 1-based
    reason: str


def reason_kind(reason: str) -> str:
    """The reason without the position inside the line, for counting alike reasons together."""
    return _POSITION.sub("", reason)


def read_jsonl(uri: str, check: Callable[[dict], dict]) -> tuple[list[dict], list[Quarantined]]:
    """The records of one JSON Lines file that parse and pass ``check``, and the quarantined lines."""
    records: list[dict] = []
    bad: list[Quarantined] = []
    chunks = lake.read_bytes(uri).split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()  # the newline that ends the last line
    for n, raw in enumerate(chunks, 1):
        try:
            records.append(check(_parse(raw.removesuffix(b"\r"))))
        except BadLine as e:
            bad.append(Quarantined(uri, n, str(e)))
    if bad:
        kinds = Counter(reason_kind(q.reason) for q in bad)
        log.warning("%s: %d of %d lines quarantined (first: line %d): %s", uri, len(bad), len(chunks), bad[0].line,
                    "; ".join(f"{k} x{c}" for k, c in kinds.most_common()))
    return records, bad


def _parse(raw: bytes) -> dict:
    if not raw.strip():
        raise BadLine("blank line")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise BadLine("a byte order mark (BOM) before the JSON")
    try:
        record = bounds.loads(raw, MAX_LINE_BYTES, "line")
    except bounds.BoundsError as e:
        raise BadLine(e.error) from e
    if not isinstance(record, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(record), "a number")
        raise BadLine(f"{kind}, not a JSON object")
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadLine("a string that is not valid Unicode (a lone surrogate): DynamoDB stores UTF-8") from e
    return record
