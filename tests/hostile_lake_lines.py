"""A corpus of hostile lake lines (issue 19): each must be quarantined with a reason, never stop a reader.

``ANSWER_LINES`` go to ``events/answers/day=*/``, ``INPUT_LINES`` and
``OUTPUT_LINES`` to a night's ``inference/batch/<run-date>/input/`` and
``output/``. ``GOOD_*`` are the lines a reader must still serve beside them.

    from hostile_lake_lines import ANSWER_LINES, GOOD_ANSWERS
"""

from __future__ import annotations

import json

GOOD_ANSWERS = [
    {"user_id": "g1", "answer_id": "g1-1", "skill_id": 1, "correct": 1, "content_id": 11,
     "answered_at": "2026-11-25T10:00:00.000Z"},
    {"user_id": "g1", "answer_id": "g1-2", "skill_id": 2, "correct": 0, "answered_at": "2026-11-25T10:01:00.000Z"},
    {"user_id": "g2", "answer_id": "g2-1", "skill_id": 3, "correct": 1, "answered_at": "2026-11-25T10:02:00.000Z"},
]
GOOD_INPUT = {"user_id": "g1", "as_of": "2026-11-25T10:01:00.000Z",
              "user_sequence": [{"skill_id": 1, "correct": 1}, {"skill_id": 2, "correct": 0}]}
GOOD_OUTPUT = {"user_id": "g1", "as_of": "2026-11-25T10:01:00.000Z", "mastery": {"1": 0.7, "2": 0.4},
               "next_skill_recommendation": 2, "predicted_accuracy": 0.55,
               "topic_mastery": {"algebra": 0.7, "arithmetic": 0.4}, "model_version": "v1"}
TRANSFORM_ERROR = {"user_id": "g3", "as_of": "2026-11-25T10:03:00.000Z", "error": "unknown skill ids: [99]",
                   "field": "line[2].user_sequence[0].skill_id"}


def _line(record: dict, **change: object) -> bytes:
    record = {k: v for k, v in {**record, **change}.items() if v is not _DROP}
    return json.dumps(record).encode("utf-8")


_DROP = object()
_A = GOOD_ANSWERS[0]
_O = GOOD_OUTPUT

ANSWER_LINES: dict[str, bytes] = {
    "blank": b"", "spaces": b"   ", "tab": b"\t", "carriage-return-only": b"\r",
    "truncated": b'{"user_id": "u1", "answer_id"', "half-an-object": _line(_A)[:40],
    "bom": b"\xef\xbb\xbf" + _line(_A, answer_id="bom"), "non-utf8": b'{"user_id": "\xff\xfe"}',
    "latin1": _line(_A, user_id="caf\u00e9").decode("utf-8").replace("\\u00e9", "\u00e9").encode("latin-1"),
    "nul-bytes": b"\x00\x00\x00", "null": b"null", "array": b"[1, 2]", "string": b'"answer"', "number": b"42",
    "skill-1e38": _line(_A, skill_id=10**38), "skill-int32-overflow": _line(_A, skill_id=2**31),
    "skill-negative": _line(_A, skill_id=-1), "skill-string": _line(_A, skill_id="3"),
    "skill-float": _line(_A, skill_id=1.5), "skill-bool": _line(_A, skill_id=True), "skill-null": _line(_A, skill_id=None),
    "content-1e38": _line(_A, content_id=10**38), "content-negative": _line(_A, content_id=-1),
    "correct-2": _line(_A, correct=2), "correct-bool": _line(_A, correct=True),
    "user-int": _line(_A, user_id=5), "user-empty": _line(_A, user_id=""), "user-129": _line(_A, user_id="u" * 129),
    "user-lone-surrogate": _line(_A, user_id="\ud800"), "missing-answer_id": _line(_A, answer_id=_DROP),
    "missing-answered_at": _line(_A, answered_at=_DROP), "month-13": _line(_A, answered_at="2026-13-01T00:00:00.000Z"),
    "no-millis": _line(_A, answered_at="2026-11-25T10:00:00Z"), "extra-field": _line(_A, extra=1),
    "nan": b'{"user_id": "u1", "answer_id": "a", "skill_id": NaN, "correct": 1, "answered_at": "2026-11-25T10:00:00.000Z"}',
    "infinity": b'{"user_id": "u1", "answer_id": "a", "skill_id": 1, "correct": Infinity, '
                b'"answered_at": "2026-11-25T10:00:00.000Z"}',
    "5000-digits": b'{"skill_id": ' + b"9" * 5000 + b"}", "nested-10000": b"[" * 10_000 + b"]" * 10_000,
    "two-objects": _line(_A) + _line(GOOD_ANSWERS[1]), "trailing-comma": _line(_A)[:-1] + b", }",
    "single-quotes": b"{'user_id': 'u1'}", "duplicated-key": _line(_A)[:-1] + b', "skill_id": 2}',
    "two-megabytes": _line(_A, user_id="u" * (2 << 20)),
}
INPUT_LINES: dict[str, bytes] = {
    "blank": b"", "truncated": b'{"user_id": "g1", "user_seq', "sequence-not-list": _line(GOOD_INPUT, user_sequence={}),
    "missing-user": _line(GOOD_INPUT, user_id=_DROP), "non-utf8": b'{"user_id": "\xc3\x28"}',
    "user-number": _line(GOOD_INPUT, user_id=10**38),
}
OUTPUT_LINES: dict[str, bytes] = {
    "blank": b"", "truncated": _line(_O)[:50], "bom": b"\xef\xbb\xbf" + _line(_O), "non-utf8": b"\xff" + _line(_O),
    "mastery-list": _line(_O, mastery=[0.5]), "mastery-above-1": _line(_O, mastery={"1": 1.5}),
    "mastery-nan": _line(_O)[:-1].replace(b'"1": 0.7', b'"1": NaN') + b"}", "mastery-key-not-skill": _line(_O, mastery={"abc": 0.5}),
    "mastery-key-1e38": _line(_O, mastery={str(10**38): 0.5}), "topic-list": _line(_O, topic_mastery=[]),
    "topic-lone-surrogate": _line(_O, topic_mastery={"\udc80": 0.5}), "user-missing": _line(_O, user_id=_DROP),
    "user-1e38": _line(_O, user_id=10**38), "user-129": _line(_O, user_id="u" * 129),
    "next-skill-1e38": _line(_O, next_skill_recommendation=10**38), "next-skill-negative": _line(_O, next_skill_recommendation=-1),
    "next-skill-string": _line(_O, next_skill_recommendation="2"), "accuracy-string": _line(_O, predicted_accuracy="high"),
    "accuracy-negative": _line(_O, predicted_accuracy=-0.1), "model-version-null": _line(_O, model_version=None),
    "as_of-missing": _line(_O, as_of=_DROP), "error-not-string": _line(TRANSFORM_ERROR, error={"x": 1}),
    "array": b"[]", "nested-10000": b"{\"a\":" * 10_000 + b"1" + b"}" * 10_000,
}
