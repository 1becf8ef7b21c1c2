"""Request parsing and bounds of the mastery API: every rejection an ``ApiError`` (4xx naming the field).

The body checks follow terraform/templates/*.schema.json (API Gateway's request
models); the answers of ``POST /api/kt/mastery`` are checked by the endpoint's
own validator (``kt.inference.parse_request``), so a bad request is a 4xx
whoever answers it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from kt import bounds

if TYPE_CHECKING:
    from starlette.requests import Request

JSON = "application/json"
MAX_ANSWER_BYTES = 4 * 1024  # one answer is ~200 bytes
MAX_MASTERY_BYTES = 1024 * 1024  # a user_sequence at kt.inference.MAX_ANSWERS is ~350 KB
MAX_ID_CHARS = 128  # user_id and answer_id, as answer.schema.json
MAX_CLOCK_SKEW = timedelta(minutes=5)  # answers from the future would block newer rows (as_of ordering)
ANSWER_FIELDS = ("user_id", "answer_id", "skill_id", "correct", "content_id", "answered_at")
ANSWER_REQUIRED = ("user_id", "answer_id", "skill_id", "correct", "answered_at")
ANSWERED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


class ApiError(Exception):
    """A 4xx/5xx answer with the body ``{"error": ..., "field": ...}``."""

    def __init__(self, status: int, error: str, field: str | None):
        super().__init__(error)
        self.status, self.error, self.field = status, error, field


def _check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise ApiError(400, f"{field} must be a string of 1 to {MAX_ID_CHARS} characters", field)
    try:
        value.encode("utf-8")  # DynamoDB stores UTF-8: a lone surrogate (JSON "\ud800") cannot be stored
    except UnicodeEncodeError as e:
        raise ApiError(400, f"{field} is not valid Unicode (a lone surrogate)", field) from e
    return value


def check_answer(payload: object) -> dict:
    """A tutor answer checked as answer.schema.json does, plus a real answered_at; the lake's readers use it too."""
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object", "body")
    for key in payload:
        if key not in ANSWER_FIELDS:
            raise ApiError(400, f"unknown field {key!r}", str(key) or "body")
    for key in ANSWER_REQUIRED:
        if key not in payload:
            raise ApiError(400, f"{key} is required", key)
    answer = {"user_id": _check_id(payload["user_id"], "user_id"),
              "answer_id": _check_id(payload["answer_id"], "answer_id")}
    for key in ("skill_id", "content_id"):
        if key in payload and not bounds.is_id(payload[key]):
            raise ApiError(400, f"{key} must be an integer from 0 to {bounds.INT32_MAX}", key)
    answer["skill_id"] = payload["skill_id"]
    if "content_id" in payload:
        answer["content_id"] = payload["content_id"]
    if type(payload["correct"]) is not int or payload["correct"] not in (0, 1):
        raise ApiError(400, "correct must be 0 or 1", "correct")
    answer["correct"] = payload["correct"]
    at = payload["answered_at"]
    if not isinstance(at, str) or not ANSWERED_AT.fullmatch(at):
        raise ApiError(400, "answered_at must be UTC with milliseconds: YYYY-MM-DDTHH:MM:SS.sssZ", "answered_at")
    try:
        datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError as e:
        raise ApiError(400, f"answered_at is not a real time: {e}", "answered_at") from e
    answer["answered_at"] = at
    return answer


def parse_answer(payload: object, now: datetime) -> dict:
    """An answer as POST /api/kt/answers takes it: check_answer, and not from the future."""
    answer = check_answer(payload)
    moment = datetime.strptime(answer["answered_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    if moment > now + MAX_CLOCK_SKEW:
        raise ApiError(400, f"answered_at is more than {MAX_CLOCK_SKEW} in the future", "answered_at")
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
        return raw, bounds.loads(raw, limit)
    except bounds.BoundsError as e:
        raise ApiError(e.status, e.error, e.field) from e


def _user_id_param(request: Request) -> str:
    values = request.query_params.getlist("user_id")
    if not values or values[0] == "":
        raise ApiError(400, "Missing required request parameters: [user_id]", "user_id")
    if len(values) > 1:
        raise ApiError(400, "user_id is given more than once", "user_id")
    return _check_id(values[0], "user_id")
