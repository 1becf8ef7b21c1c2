"""A corpus of hostile requests to the mastery API and the model (issue 19): every door must answer 4xx.

Each case is the raw bytes a client could send to ``POST /api/kt/answers`` or
``POST /api/kt/mastery`` (the same bytes go to the model's ``/invocations``).
``accepted_by`` names the doors that rightly take it, with the reason in
``why``: "edge" when API Gateway's request model (JSON Schema draft 4) cannot
express the rule (the integration or the model refuses it after the edge),
"model" when only the API's own rules refuse it (the model takes integer
user ids, and bodies up to 6 MB). Every other door must answer a 4xx whose
body names the field.

    from hostile_requests import CASES
"""

from __future__ import annotations

import json
from dataclasses import dataclass

ANSWER = {"user_id": "u1", "answer_id": "a1", "skill_id": 1, "correct": 1, "content_id": 7,
          "answered_at": "2026-11-25T01:02:03.456Z"}
MASTERY = {"user_id": "u1", "user_sequence": [{"skill_id": 1, "correct": 1}, {"skill_id": 2, "correct": 0}]}
JSON_TYPE = "application/json"
INT32_MAX = 2**31 - 1
DEEP = 10_000  # RecursionError in json.loads without the pre-parse bound
JUST_TOO_DEEP = 40  # past kt.bounds.MAX_JSON_DEPTH, parsable by any parser


@dataclass(frozen=True)
class Case:
    name: str
    route: str  # "answers" or "mastery"
    raw: bytes
    content_type: str = JSON_TYPE
    accepted_by: frozenset[str] = frozenset()  # "edge", "model"
    why: str = ""


def _dump(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


def _nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


# Values no integer id, count or 0/1 flag may take.
BAD_INTEGERS: list[tuple[str, object]] = [
    ("null", None), ("true", True), ("false", False), ("float", 1.5), ("float-integral", 1.0), ("negative", -1),
    ("int32-overflow", INT32_MAX + 1), ("int64-max", 2**63 - 1), ("1e38", 10**38), ("1e38+1", 10**38 + 1),
    ("-1e38", -(10**38)), ("string-digits", "1"), ("empty-string", ""), ("list", [1]), ("object", {"n": 1}),
    ("float-1e308", 1e308), ("arabic-digit", "\u0661"),
]
BAD_FLAGS: list[tuple[str, object]] = [
    ("two", 2), ("minus-one", -1), ("null", None), ("true", True), ("false", False), ("one-float", 1.0),
    ("string", "1"), ("list", [1]), ("object", {}), ("1e38", 10**38),
]
BAD_IDS: list[tuple[str, object]] = [
    ("null", None), ("int", 5), ("float", 1.5), ("true", True), ("empty", ""), ("129-chars", "u" * 129),
    ("list", ["u1"]), ("object", {"id": "u1"}), ("1e38", 10**38),
]
BAD_TIMES: list[tuple[str, object]] = [
    ("no-millis", "2026-11-25T01:02:03Z"), ("space", "2026-11-25 01:02:03.456Z"), ("offset", "2026-11-25T01:02:03.456+00:00"),
    ("date-only", "2026-11-25"), ("empty", ""), ("int", 20261125), ("null", None),
    ("arabic-digits", "\u0662\u0660\u0662\u0666-11-25T01:02:03.456Z"), ("trailing-newline", "2026-11-25T01:02:03.456Z\n"),
    ("micros", "2026-11-25T01:02:03.456789Z"), ("lowercase", "2026-11-25t01:02:03.456z"), ("list", ["2026-11-25T01:02:03.456Z"]),
]
# Rules a schema cannot state: the edge passes these, the API refuses them.
EDGE_BLIND_TIMES: list[tuple[str, object, str]] = [
    ("month-13", "2026-13-25T01:02:03.456Z", "the pattern cannot tell a real date"),
    ("feb-30", "2026-02-30T01:02:03.456Z", "the pattern cannot tell a real date"),
    ("hour-25", "2026-11-25T25:02:03.456Z", "the pattern cannot tell a real time"),
    ("future", "2999-01-01T00:00:00.000Z", "a schema has no clock"),
]

RAW_BODIES: list[tuple[str, bytes, str]] = [  # (name, body, content type): none of them a usable request
    ("empty", b"", JSON_TYPE), ("whitespace", b"   \n\t ", JSON_TYPE), ("null", b"null", JSON_TYPE),
    ("true", b"true", JSON_TYPE), ("number", b"42", JSON_TYPE), ("string", b'"x"', JSON_TYPE),
    ("array", b"[]", JSON_TYPE), ("truncated", b'{"user_id": "u1", ', JSON_TYPE), ("trailing-garbage", b"{}}", JSON_TYPE),
    ("single-quotes", b"{'user_id': 'u1'}", JSON_TYPE), ("nan", b'{"skill_id": NaN}', JSON_TYPE),
    ("infinity", b'{"skill_id": Infinity}', JSON_TYPE), ("minus-infinity", b'{"skill_id": -Infinity}', JSON_TYPE),
    ("non-utf8", b'{"user_id": "\xff\xfe"}', JSON_TYPE), ("latin1", '{"user_id": "caf\u00e9"}'.encode("latin-1"), JSON_TYPE),
    ("utf16", '{"user_id": "u1"}'.encode("utf-16"), JSON_TYPE), ("nul-byte", b'{"a": 1}\x00', JSON_TYPE),
    ("deep-array", _nested(DEEP).encode(), JSON_TYPE), ("deep-object", ('{"a":' * DEEP + "1" + "}" * DEEP).encode(), JSON_TYPE),
    ("unbalanced-open", b"[" * 100_000, JSON_TYPE), ("unbalanced-close", b"]" * 100, JSON_TYPE),
    ("huge-int-literal", b'{"skill_id": ' + b"9" * 5000 + b"}", JSON_TYPE), ("1e400", b'{"skill_id": 1e400}', JSON_TYPE),
    ("text-plain", _dump(ANSWER), "text/plain"), ("form", b"user_id=u1&skill_id=1", "application/x-www-form-urlencoded"),
    ("no-content-type", _dump(ANSWER), ""), ("xml", b"<answer/>", "application/xml"),
]


def _answer_cases() -> list[Case]:
    cases = []

    def add(name: str, body: dict, **kw) -> None:
        cases.append(Case(f"answers/{name}", "answers", _dump(body), **kw))

    for field in ("skill_id", "content_id"):
        for name, value in BAD_INTEGERS:
            add(f"{field}={name}", {**ANSWER, field: value})
    for name, value in BAD_FLAGS:
        add(f"correct={name}", {**ANSWER, "correct": value})
    for field in ("user_id", "answer_id"):
        for name, value in BAD_IDS:
            add(f"{field}={name}", {**ANSWER, field: value})
        add(f"{field}=lone-surrogate", {**ANSWER, field: "\ud800"}, accepted_by=frozenset({"edge"}),
            why="a JSON string escape the edge's parser decodes; DynamoDB stores UTF-8 only")
        cases.append(Case(f"answers/{field}=nested-{JUST_TOO_DEEP}", "answers",
                          _dump(ANSWER).replace(f'"{field}": "{ANSWER[field]}"'.encode(),
                                                f'"{field}": {_nested(JUST_TOO_DEEP)}'.encode())))
    for name, value in BAD_TIMES:
        add(f"answered_at={name}", {**ANSWER, "answered_at": value})
    for name, value, why in EDGE_BLIND_TIMES:
        add(f"answered_at={name}", {**ANSWER, "answered_at": value}, accepted_by=frozenset({"edge"}), why=why)
    for field in ("user_id", "answer_id", "skill_id", "correct", "answered_at"):
        add(f"missing-{field}", {k: v for k, v in ANSWER.items() if k != field})
        other = {"user_id": "u2", "answer_id": "a2", "skill_id": 2, "correct": 0, "answered_at": "2026-11-25T01:02:04.456Z"}
        raw = _dump(ANSWER)[:-1] + f', "{field}": {json.dumps(other[field])}}}'.encode()
        cases.append(Case(f"answers/duplicated-{field}", "answers", raw, accepted_by=frozenset({"edge"}),
                          why="parsers keep one of the duplicates; a schema sees only that one"))
    for name, extra in [("extra-field", {"extra": 1}), ("empty-key", {"": 1}), ("padded-key", {"user_id ": "u1"}),
                        ("fullwidth-key", {"\uff55ser_id": "u1"}),
                        ("deep-extra", {"extra": json.loads(_nested(JUST_TOO_DEEP))})]:
        add(name, {**ANSWER, **extra})
    add("user_sequence", {**ANSWER, "user_sequence": []}, accepted_by=frozenset({"model"}),
        why="to the model, a mastery request (with fields it ignores)")
    for name, body in [("list", [ANSWER]), ("string", json.dumps(ANSWER)), ("empty-object", {})]:
        add(f"body={name}", body)
    cases.append(Case("answers/5kb-of-whitespace", "answers", _dump(ANSWER) + b" " * 5000,
                      accepted_by=frozenset({"edge"}), why="the API's 4 KB answer limit; API Gateway's is 10 MB"))
    cases.append(Case("answers/bom", "answers", b"\xef\xbb\xbf" + _dump(ANSWER), accepted_by=frozenset({"edge"}),
                      why="a UTF-8 BOM, which some parsers skip"))
    return cases


def _mastery_cases() -> list[Case]:
    cases = []

    def add(name: str, body: object, **kw) -> None:
        cases.append(Case(f"mastery/{name}", "mastery", _dump(body), **kw))

    for name, value in BAD_INTEGERS:
        add(f"skill_id={name}", {"user_sequence": [{"skill_id": value, "correct": 1}]})
    for name, value in BAD_FLAGS:
        add(f"correct={name}", {"user_sequence": [{"skill_id": 1, "correct": value}]})
    for name, item in [("int", 1), ("string", "1"), ("null", None), ("list", [1, 1]), ("empty-object", {}),
                       ("missing-correct", {"skill_id": 1}), ("missing-skill", {"correct": 1})]:
        add(f"item={name}", {"user_sequence": [{"skill_id": 1, "correct": 1}, item]})
    for name, value in [("object", {}), ("string", "1,1"), ("null", None), ("int", 1), ("nested", [[{"skill_id": 1, "correct": 1}]])]:
        add(f"user_sequence={name}", {"user_sequence": value})
    add("missing-user_sequence", {"user_id": "u1"})
    add("10001-answers", {"user_sequence": [{"skill_id": 1, "correct": 1}] * 10_001})
    for name, value in [("float", 1.5), ("true", True), ("list", ["u1"]), ("object", {})]:
        add(f"user_id={name}", {**MASTERY, "user_id": value})
    add("user_id=int", {**MASTERY, "user_id": 3}, accepted_by=frozenset({"model"}),
        why="the model echoes integer user ids (docs/contracts.md §6.1); the API takes strings only")
    for name, value in [("int", 5), ("list", []), ("object", {})]:
        add(f"as_of={name}", {**MASTERY, "as_of": value})
    for name, value in [("string", "yes"), ("int", 1), ("null", None)]:
        add(f"return_state={name}", {**MASTERY, "return_state": value})
    for name, value in [("list", []), ("string", "s"), ("int", 1)]:
        add(f"state={name}", {**MASTERY, "state": value})
    for name, value in [("empty", {}), ("other-model", {"model_version": "other", "answers": 1, "skills": [1], "lstm": ""})]:
        add(f"state={name}", {**MASTERY, "state": value}, accepted_by=frozenset({"edge"}),
            why="the state is the model's to check (409: another model's state)")
    for name, skill in [("unknown-skill", 999_999), ("int32-max-unknown", INT32_MAX)]:
        add(name, {"user_sequence": [{"skill_id": skill, "correct": 1}]}, accepted_by=frozenset({"edge"}),
            why="only the model knows its skills")
    add(f"state-nested-{JUST_TOO_DEEP}", {**MASTERY, "state": {"x": json.loads(_nested(JUST_TOO_DEEP))}},
        accepted_by=frozenset({"edge"}), why="a schema cannot bound nesting inside an open object")
    add(f"item-extra-nested-{JUST_TOO_DEEP}", {"user_sequence": [{"skill_id": 1, "correct": 1,
                                                                  "x": json.loads(_nested(JUST_TOO_DEEP))}]},
        accepted_by=frozenset({"edge"}), why="a schema cannot bound nesting inside an open object")
    cases.append(Case(f"mastery/user_sequence-nested-{DEEP}", "mastery",
                      b'{"user_sequence": ' + _nested(DEEP).encode() + b"}"))
    for field in ("skill_id", "correct"):
        raw = b'{"user_sequence": [{"skill_id": 1, "correct": 1, "' + field.encode() + b'": 0}]}'
        cases.append(Case(f"mastery/duplicated-{field}", "mastery", raw, accepted_by=frozenset({"edge"}),
                          why="parsers keep one of the duplicates; a schema sees only that one"))
    cases.append(Case("mastery/duplicated-user_sequence", "mastery",
                      b'{"user_sequence": [], "user_sequence": [{"skill_id": 1, "correct": 1}]}',
                      accepted_by=frozenset({"edge"}), why="parsers keep one of the duplicates"))
    cases.append(Case("mastery/7mb-of-whitespace", "mastery", _dump(MASTERY) + b" " * (7 << 20),
                      accepted_by=frozenset({"edge"}), why="API Gateway takes 10 MB; the API 1 MB, the model 6 MB"))
    cases.append(Case("mastery/2mb-of-whitespace", "mastery", _dump(MASTERY) + b" " * (2 << 20),
                      accepted_by=frozenset({"edge", "model"}), why="the API's 1 MB limit; the model's is 6 MB"))
    return cases


def _raw_cases() -> list[Case]:
    return [Case(f"{route}/raw-{name}", route, raw, content_type)
            for route in ("answers", "mastery") for name, raw, content_type in RAW_BODIES]


CASES: list[Case] = _answer_cases() + _mastery_cases() + _raw_cases()
assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
