"""SageMaker inference handlers for DKT (DESIGN §6): model_fn, input_fn, predict_fn, output_fn.

Bundled into ``model.tar.gz`` as ``code/kt/inference.py`` and used as is by the
endpoint, the batch transform (JSON Lines, one user per line) and `kt predict`.
Invalid requests raise ``RequestError`` (the inference toolkit's error type
with a 4xx status), whose body is ``{"error": ..., "field": ...}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from sagemaker_inference.errors import GenericInferenceToolkitError

from kt.mastery import mean_by_topic, response
from kt.model import DKT, DKTConfig, encode

MAX_ANSWERS = 10_000  # longest accepted user_sequence
JSON = "application/json"
JSON_LINES = "application/jsonlines"


class RequestError(GenericInferenceToolkitError):
    """A 4xx answer naming the field at fault."""

    def __init__(self, message: str, field: str, status: int = 400):
        self.error = message
        self.field = field
        super().__init__(status, json.dumps({"error": message, "field": field}), message)


@dataclass
class LoadedModel:
    model: DKT
    skill_ids: list[int]  # index order
    index: dict[int, int]
    skill_topics: dict[int, str]
    prior: list[float]  # per-skill base rates: the answer for an empty history
    version: str


@dataclass
class UserRequest:
    user_id: str | None
    as_of: str | None
    sequence: list[tuple[int, int]]  # (skill_id, correct)


def model_fn(model_dir: str) -> LoadedModel:
    """Load model.pth and model.json once per worker."""
    with open(os.path.join(model_dir, "model.json")) as f:
        info = json.load(f)
    config = DKTConfig(**info["config"])
    model = DKT(config)
    model.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), map_location="cpu", weights_only=True))
    model.eval()
    skill_ids = [int(s) for s in info["skill_ids"]]
    return LoadedModel(
        model=model,
        skill_ids=skill_ids,
        index={s: i for i, s in enumerate(skill_ids)},
        skill_topics={int(s): t for s, t in info["skill_topics"].items()},
        prior=[float(p) for p in info["base_rates"]],
        version=info["model_version"],
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(payload: object, known: dict[int, int] | None, where: str = "") -> UserRequest:
    """Validate one request object; raise RequestError naming the first bad field."""
    if not isinstance(payload, dict):
        raise RequestError("the request must be a JSON object", where or "body")
    user_id = payload.get("user_id")
    if user_id is not None and not (isinstance(user_id, str) or _is_int(user_id)):
        raise RequestError("user_id must be a string", f"{where}user_id")
    as_of = payload.get("as_of")
    if as_of is not None and not isinstance(as_of, str):
        raise RequestError("as_of must be an ISO 8601 string", f"{where}as_of")
    if "user_sequence" not in payload:
        raise RequestError("user_sequence is required", f"{where}user_sequence")
    items = payload["user_sequence"]
    if not isinstance(items, list):
        raise RequestError("user_sequence must be a list of {skill_id, correct}", f"{where}user_sequence")
    if len(items) > MAX_ANSWERS:
        raise RequestError(
            f"user_sequence has {len(items)} answers; the limit is {MAX_ANSWERS}", f"{where}user_sequence", status=413
        )
    sequence = []
    unknown: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        field = f"{where}user_sequence[{i}]"
        if not isinstance(item, dict):
            raise RequestError("each answer must be an object {skill_id, correct}", field)
        for key in ("skill_id", "correct"):
            if key not in item:
                raise RequestError(f"{key} is required", f"{field}.{key}")
        skill, correct = item["skill_id"], item["correct"]
        if not _is_int(skill):
            raise RequestError("skill_id must be an integer", f"{field}.skill_id")
        if not _is_int(correct) or correct not in (0, 1):
            raise RequestError("correct must be 0 or 1", f"{field}.correct")
        if known is not None and skill not in known:
            unknown.append((i, skill))
        sequence.append((skill, correct))
    if unknown:
        ids = sorted({s for _, s in unknown})
        raise RequestError(f"unknown skill ids: {ids}", f"{where}user_sequence[{unknown[0][0]}].skill_id")
    return UserRequest(None if user_id is None else str(user_id), as_of, sequence)


def _decode(body: bytes | str) -> str:
    try:
        return body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    except UnicodeDecodeError as e:
        raise RequestError("the body is not UTF-8", "body") from e


def input_fn(request_body: bytes | str, request_content_type: str | None) -> dict:
    """Parse a JSON request or a JSON Lines batch. Validation against skills happens in predict_fn."""
    content_type = (request_content_type or JSON).split(";")[0].strip().lower()
    text = _decode(request_body)
    if content_type == JSON:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as e:
            raise RequestError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", "body") from e
        return {"batch": False, "lines": [payload]}
    if content_type in (JSON_LINES, "application/x-jsonlines", "application/jsonl"):
        lines = []
        for n, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as e:
                lines.append(RequestError(f"malformed JSON: {e.msg}", f"line[{n}]"))
        return {"batch": True, "lines": lines}
    raise RequestError(f"unsupported content type {request_content_type!r}; use {JSON} or {JSON_LINES}", "Content-Type", 415)


@torch.no_grad()
def mastery_vectors(model: LoadedModel, sequences: list[list[tuple[int, int]]]) -> list[list[float]]:
    """P(correct) on every skill after each history, all histories in one padded batch."""
    out: list[list[float] | None] = [None] * len(sequences)
    window = model.model.config.max_seq_len
    todo = [i for i, s in enumerate(sequences) if s]
    for i, s in enumerate(sequences):
        if not s:
            out[i] = list(model.prior)
    if todo:
        recent = [sequences[i][-window:] for i in todo]  # the model was trained on windows of this length
        longest = max(len(s) for s in recent)
        tokens = torch.zeros(len(recent), longest, dtype=torch.long)
        lengths = torch.tensor([len(s) for s in recent])
        for row, seq in enumerate(recent):
            skills = torch.tensor([model.index[s] for s, _ in seq])
            correct = torch.tensor([c for _, c in seq])
            tokens[row, : len(seq)] = encode(skills, correct)
        model.model.eval()
        probs, _ = model.model(tokens)  # (B, T, S)
        last = probs[torch.arange(len(recent)), lengths - 1]  # (B, S)
        for row, i in enumerate(todo):
            out[i] = last[row].tolist()
    return out  # type: ignore[return-value]


def predict_fn(data: dict, model: LoadedModel) -> dict:
    """Mastery responses for every request; in a batch a bad line gets an error line, not a failed job."""
    parsed: list[UserRequest | RequestError] = []
    for n, line in enumerate(data["lines"]):
        if isinstance(line, RequestError):
            parsed.append(line)
            continue
        try:
            parsed.append(parse_request(line, model.index))
        except RequestError as e:
            if not data["batch"]:
                raise
            e.field = f"line[{n}].{e.field}"
            parsed.append(e)
    good = [p for p in parsed if isinstance(p, UserRequest)]
    vectors = iter(mastery_vectors(model, [p.sequence for p in good]))
    results = []
    for p in parsed:
        if isinstance(p, RequestError):
            results.append({"error": p.error, "field": p.field})
            continue
        vector = next(vectors)
        mastery = dict(zip(model.skill_ids, vector))
        body = response(mastery, {s for s, _ in p.sequence}, mean_by_topic(mastery, model.skill_topics), model.version)
        if data["batch"]:
            body = {"user_id": p.user_id, "as_of": p.as_of, **body}
        results.append(body)
    return {"batch": data["batch"], "results": results}


def output_fn(prediction: dict, accept: str | None) -> str:
    """JSON for one request, JSON Lines for a batch."""
    accept_type = (accept or JSON).split(";")[0].strip().lower()
    if accept_type not in (JSON, JSON_LINES, "*/*", "application/x-jsonlines", "application/jsonl"):
        raise RequestError(f"unsupported accept type {accept!r}; use {JSON} or {JSON_LINES}", "Accept", 406)
    if prediction["batch"]:
        return "".join(json.dumps(r) + "\n" for r in prediction["results"])
    return json.dumps(prediction["results"][0])
