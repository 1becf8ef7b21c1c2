"""The limits every door applies before and after parsing a request (docs/contracts.md §9, "Every door").

One definition for `kt api`, `kt predict`, `kt endpoint serve`, the handlers
bundled in model.tar.gz (``code/kt/``: standard library only) and, as far as
JSON Schema draft 4 can say it, the API Gateway request models
(terraform/templates/*.schema.json).

- Size and nesting are checked on the raw bytes, before ``json.loads``: a deep
  body would otherwise exhaust the parser's recursion (a RecursionError).
- ``loads`` refuses what JSON parsers disagree on: NaN/Infinity literals,
  numbers out of range, duplicated keys.
- Ids are int32 (``skill_id``, ``content_id``: the parquet schema's type, the
  model's ids) and non-negative; DynamoDB (38 digits) takes every one of them.
"""

from __future__ import annotations

import json
import re

INT32_MAX = 2**31 - 1  # skill_id and content_id are int32 in processed/ (kt.schema)
MAX_JSON_DEPTH = 32  # the deepest request (a stateful mastery request) nests 4 levels
MAX_JSON_BYTES = 6 * 1024 * 1024  # SageMaker's real-time invocation payload limit (6 MB)

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


class BoundsError(ValueError):
    """A request outside the limits: a 4xx naming the field."""

    def __init__(self, status: int, error: str, field: str):
        super().__init__(error)
        self.status, self.error, self.field = status, error, field


def is_id(value: object) -> bool:
    """An int32 id >= 0 (a JSON integer: not a bool, not a float)."""
    return type(value) is int and 0 <= value <= INT32_MAX


def _nesting_error(brackets: bytes) -> str | None:
    """What is wrong with a bracket sequence: None when balanced and at most MAX_JSON_DEPTH deep.

    Each pass removes the adjacent empty pairs, the innermost level: a sequence
    D deep is empty after D passes, an unbalanced one stops shrinking.
    """
    for _ in range(MAX_JSON_DEPTH):
        if not brackets:
            return None
        shorter = _EMPTY_PAIR.sub(b"", brackets)
        if len(shorter) == len(brackets):
            return "malformed JSON: unbalanced brackets"
        brackets = shorter
    return f"the JSON nests deeper than {MAX_JSON_DEPTH} levels" if brackets else None


def _check_depth(raw: bytes, field: str) -> None:
    """Reject nesting deeper than MAX_JSON_DEPTH, reading brackets outside strings only."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return  # the common small body: nothing to scan
    if _nesting_error(raw.translate(None, _NOT_BRACKETS)) is None:
        return  # brackets inside strings only add passes: fine with them is fine without
    error = _nesting_error(_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS))
    if error:
        raise BoundsError(400, error, field)


def _no_constants(name: str) -> object:
    raise BoundsError(400, f"malformed JSON: {name} is not a JSON number", "")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise BoundsError(400, f"the key {key!r} is given more than once", key)
    return out


def loads(raw: bytes | str, max_bytes: int = MAX_JSON_BYTES, field: str = "body") -> object:
    """``json.loads`` within the limits; every failure a BoundsError (400, or 413 when too large)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if len(data) > max_bytes:
        raise BoundsError(413, f"the body is larger than {max_bytes} bytes", field)
    _check_depth(data, field)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BoundsError(400, "the body is not UTF-8", field) from e
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except BoundsError as e:
        raise BoundsError(e.status, e.error, field if not e.field else e.field) from None
    except json.JSONDecodeError as e:
        raise BoundsError(400, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", field) from e
    except ValueError as e:  # an integer of more than 4300 digits (sys.int_info)
        raise BoundsError(400, f"malformed JSON: {e}", field) from e
