"""The endpoint's validation corpus: requests, with the status and error field each must get (docs/contracts.md).

Used by tests/test_serve.py (`kt endpoint serve`) and tests/test_toolkit_inference.py (the same
tarball under the real inference toolkit and TorchServe, answer for answer). Skill ids 1-16 are the
tiny model's (tests/conftest.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

JSON = "application/json"
JSON_LINES = "application/jsonlines"
ANSWER = {"skill_id": 1, "correct": 1}
INTERNAL_ERROR = {"error": "internal error in the model handler", "field": None}
# Appended to a tarball's code/inference.py: a request from user "boom" is a bug in the handler.
CRASH_HOOK = (
    "\n_predict_fn = predict_fn\n\n\n"
    "def predict_fn(data, model):\n"
    "    if data['lines'] and isinstance(data['lines'][0], dict) and data['lines'][0].get('user_id') == 'boom':\n"
    "        raise RuntimeError('a bug in the handler')\n"
    "    return _predict_fn(data, model)\n"
)


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str | None = JSON
    accept: str | None = None
    status: int = 200
    error: str = ""  # a part of the error message, for a 4xx
    field: str | None = None

    def headers(self) -> dict[str, str]:
        sent = {"Content-Type": self.content_type, "Accept": self.accept}
        return {k: v for k, v in sent.items() if v is not None}


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()


def _bad(name: str, payload: object, error: str, field: str, status: int = 400, **kwargs) -> Case:
    body = payload if isinstance(payload, bytes) else _json(payload)
    return Case(name, body, status=status, error=error, field=field, **kwargs)


GOOD = [
    Case("prior", _json({"user_sequence": []})),
    Case("history", _json({"user_id": 7, "as_of": "2026-11-25T10:00:00.000Z",
                           "user_sequence": [ANSWER, {"skill_id": 2, "correct": 0}, {"skill_id": 16, "correct": 1}]})),
    Case("accept_any", _json({"user_sequence": [ANSWER]}), accept="*/*"),
    Case("no_content_type", _json({"user_sequence": [ANSWER]}), content_type=None),
    Case("charset", _json({"user_sequence": [ANSWER]}), content_type="application/json; charset=utf-8"),
    Case("stateful", _json({"user_sequence": [ANSWER] * 3, "return_state": True})),
    Case("batch_with_a_bad_line", "\n".join([
        json.dumps({"user_id": "u0", "user_sequence": []}), "{not json",
        json.dumps({"user_id": "u2", "user_sequence": [ANSWER, {"skill_id": 3, "correct": 7}]}),
        json.dumps({"user_id": "u3", "user_sequence": [ANSWER] * 5})]).encode(),
        content_type=JSON_LINES, accept=JSON_LINES),
]

BAD = [
    _bad("malformed_json", b"{oops", "malformed JSON", "body"),
    _bad("empty_body", b"", "malformed JSON", "body"),
    _bad("not_utf8", b'{"user_sequence": "\xff\xfe"}', "not UTF-8", "body"),
    _bad("wrong_content_type", {"user_sequence": []}, "unsupported content type", "Content-Type", 415,
         content_type="text/csv"),
    _bad("wrong_accept", {"user_sequence": []}, "unsupported accept type", "Accept", 406, accept="text/html"),
    _bad("batch_wrong_accept", b'{"user_sequence": []}\n', "unsupported accept type", "Accept", 406,
         content_type=JSON_LINES, accept="text/html"),
    _bad("not_an_object", [1, 2], "must be a JSON object", "body"),
    _bad("a_string", "just text", "must be a JSON object", "body"),
    _bad("no_user_sequence", {"user": "x"}, "user_sequence is required", "user_sequence"),
    _bad("user_sequence_not_a_list", {"user_sequence": {"skill_id": 1}}, "user_sequence must be a list",
         "user_sequence"),
    _bad("answer_not_an_object", {"user_sequence": [["3", 1]]}, "must be an object", "user_sequence[0]"),
    _bad("no_skill_id", {"user_sequence": [{"correct": 1}]}, "skill_id is required", "user_sequence[0].skill_id"),
    _bad("skill_id_a_string", {"user_sequence": [{"skill_id": "3", "correct": 1}]}, "skill_id must be an integer",
         "user_sequence[0].skill_id"),
    _bad("no_correct", {"user_sequence": [ANSWER, {"skill_id": 1}]}, "correct is required",
         "user_sequence[1].correct"),
    _bad("correct_3", {"user_sequence": [{"skill_id": 1, "correct": 3}]}, "correct must be 0 or 1",
         "user_sequence[0].correct"),
    _bad("correct_true", {"user_sequence": [{"skill_id": 1, "correct": True}]}, "correct must be 0 or 1",
         "user_sequence[0].correct"),
    _bad("unknown_skills", {"user_sequence": [{"skill_id": 777, "correct": 1}, {"skill_id": 555, "correct": 1}]},
         "unknown skill ids: [555, 777]", "user_sequence[0].skill_id"),
    _bad("too_long", {"user_sequence": [ANSWER] * 10_001}, "the limit is 10000", "user_sequence", 413),
    _bad("user_id_a_list", {"user_id": ["u"], "user_sequence": []}, "user_id must be a string", "user_id"),
    _bad("as_of_a_number", {"as_of": 20261125, "user_sequence": []}, "as_of must be an ISO 8601 string", "as_of"),
    _bad("return_state_a_string", {"return_state": "yes", "user_sequence": []}, "return_state must be true or false",
         "return_state"),
    _bad("state_a_string", {"state": "abc", "user_sequence": []}, "state must be the object", "state"),
    _bad("state_of_another_model",
         {"user_sequence": [], "state": {"model_version": "old", "answers": 0, "skills": [], "lstm": ""}},
         "state was computed by model 'old'", "state.model_version", 409),
]

CORPUS = GOOD + BAD
# With CRASH_HOOK in the tarball: the handler's bug is a 500 that names no cause.
CRASH = Case("handler_bug", _json({"user_id": "boom", "user_sequence": []}), status=500,
             error=INTERNAL_ERROR["error"])
