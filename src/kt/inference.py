"""SageMaker inference handlers for every kt.model model (docs/contracts.md §6): model_fn, input_fn, predict_fn, output_fn.

Bundled into ``model.tar.gz`` as ``code/kt/inference.py`` and used as is by the
endpoint (``kt endpoint serve``), the batch transform (JSON Lines, one user per
line) and `kt predict`. Invalid requests raise ``RequestError`` (the inference
toolkit's error type with a 4xx status), whose body is ``{"error": ..., "field": ...}``.

Which answers the model sees:

- Stateless (the default): the last ``max_seq_len`` answers of ``user_sequence``,
  the window length the model was trained on; an empty sequence returns the
  per-skill base rates (the prior).
- Stateful (opt in with ``"return_state": true`` or by sending a ``state``): the
  response carries ``"state": {"model_version", "answers", "skills", "lstm"}``
  (answers fed so far, the skills practiced, and the LSTM's h and c after the
  last answer as float32 base64: about 3 KB; a model with ``count_features``
  adds ``"counts": {"<skill_id>": [answers, right answers]}`` for every
  practiced skill). The next request sends that
  state and only the answers since, which are all fed (no window), so the result
  equals one request with the whole history and ``return_state`` (within 1e-5).
  For histories longer than ``max_seq_len`` that differs from the stateless
  answer, which sees only the last window. A state made by another model
  version is refused (409): send the whole history again without it.
  A model without a recurrent state (model.json "model": "attn" or "ensemble") answers such a
  request from the answers it carries, as a stateless one (the last
  ``max_seq_len``), ignores any ``state`` sent and returns ``"state": null``:
  the client sends the whole history next time.

Every path (stateless, stateful, batch) goes through ``run_model``, which applies
model.json's ``temperature`` (fitted on the valid split, 1.0 when absent):
mastery = sigmoid(logit(p) / T) (``kt.calibration.apply_temperature``). The
prior (base rates) needs none.

Batches (JSON Lines) run as padded batches of users sorted by length (at most
BATCH_TOKENS padded answers per forward pass); a bad line gets an error line,
never a failed batch.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from sagemaker_inference.errors import GenericInferenceToolkitError

from kt import bounds
from kt.calibration import apply_temperature
from kt.mastery import response
from kt.model import DKT, AttentionKT, EnsembleKT, build_model, encode
from kt.topics import OTHER_TOPIC

MAX_ANSWERS = 10_000  # longest accepted user_sequence (per request; a stateful history may grow beyond it)
BATCH_TOKENS = 256 * 200  # padded answers per forward pass (~26 MB of activations at hidden 128)
JSON = "application/json"
JSON_LINES = "application/jsonlines"
JSON_LINES_TYPES = (JSON_LINES, "application/x-jsonlines", "application/jsonl")
ACCEPT_TYPES = (JSON, *JSON_LINES_TYPES, "*/*")


class RequestError(GenericInferenceToolkitError):
    """A 4xx answer naming the field at fault."""

    def __init__(self, message: str, field: str, status: int = 400):
        self.error = message
        self.field = field
        super().__init__(status, json.dumps({"error": message, "field": field}), message)


@dataclass
class LoadedModel:
    model: DKT | AttentionKT | EnsembleKT
    skill_ids: list[int]  # index order
    index: dict[int, int]
    skill_topics: dict[int, str]
    prior: list[float]  # per-skill base rates: the answer for an empty history
    version: str
    temperature: float = 1.0  # model.json's calibration: mastery = sigmoid(logit(p) / T) (kt.calibration)
    topics: list[str] = field(init=False)  # sorted, as mean_by_topic orders them
    topic_means: np.ndarray = field(init=False)  # (S, K): mastery @ topic_means = each topic's mean

    def __post_init__(self) -> None:
        """mean_by_topic as one matrix product, so a batch does not loop over skills per user."""
        of_skill = [self.skill_topics.get(s, OTHER_TOPIC) for s in self.skill_ids]
        self.topics = sorted(set(of_skill))
        column = {t: k for k, t in enumerate(self.topics)}
        self.topic_means = np.zeros((len(self.skill_ids), len(self.topics)))
        for i, t in enumerate(of_skill):
            self.topic_means[i, column[t]] = 1.0
        self.topic_means /= np.maximum(1.0, self.topic_means.sum(axis=0))


@dataclass
class UserRequest:
    user_id: str | None
    as_of: str | None
    sequence: list[tuple[int, int]]  # (skill_id, correct)
    state: dict | None = None  # the "state" of a previous stateful response
    return_state: bool = False


def model_fn(model_dir: str) -> LoadedModel:
    """Load model.pth and model.json once per worker."""
    with open(os.path.join(model_dir, "model.json")) as f:
        info = json.load(f)
    model = build_model(info.get("model", "dkt"), info["config"])  # models trained before "model" are DKT
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
        temperature=float(info.get("temperature", 1.0)),  # models trained before calibration have none
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(payload: object, known: dict[int, int] | None, where: str = "") -> UserRequest:
    """Validate one request object; raise RequestError naming the first bad field."""
    if not isinstance(payload, dict):
        raise RequestError("the request must be a JSON object", where.rstrip(".") or "body")
    user_id = payload.get("user_id")
    if user_id is not None and not (isinstance(user_id, str) or _is_int(user_id)):
        raise RequestError("user_id must be a string", f"{where}user_id")
    as_of = payload.get("as_of")
    if as_of is not None and not isinstance(as_of, str):
        raise RequestError("as_of must be an ISO 8601 string", f"{where}as_of")
    state = payload.get("state")
    if state is not None and not isinstance(state, dict):
        raise RequestError("state must be the object a previous response returned", f"{where}state")
    return_state = payload.get("return_state", False)
    if not isinstance(return_state, bool):
        raise RequestError("return_state must be true or false", f"{where}return_state")
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
    for i, item in enumerate(items):  # the hot loop of a batch: `type(x) is int` also rules out bools
        if type(item) is not dict:
            raise RequestError("each answer must be an object {skill_id, correct}", f"{where}user_sequence[{i}]")
        skill = item.get("skill_id")
        correct = item.get("correct")
        if type(skill) is not int or not 0 <= skill <= bounds.INT32_MAX:
            message = ("skill_id is required" if "skill_id" not in item
                       else f"skill_id must be an integer from 0 to {bounds.INT32_MAX}")
            raise RequestError(message, f"{where}user_sequence[{i}].skill_id")
        if type(correct) is not int or (correct != 0 and correct != 1):
            message = "correct is required" if "correct" not in item else "correct must be 0 or 1"
            raise RequestError(message, f"{where}user_sequence[{i}].correct")
        if known is not None and skill not in known:
            unknown.append((i, skill))
        sequence.append((skill, correct))
    if unknown:
        ids = sorted({s for _, s in unknown})
        raise RequestError(f"unknown skill ids: {ids}", f"{where}user_sequence[{unknown[0][0]}].skill_id")
    return UserRequest(None if user_id is None else str(user_id), as_of, sequence, state,
                       return_state or state is not None)


def decode_text(body: bytes | bytearray | str) -> str:
    """The body as text, or a 400 naming it (also the handler service's check before the toolkit decodes)."""
    try:
        return body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    except UnicodeDecodeError as e:
        raise RequestError("the body is not UTF-8", "body") from e


def _loads(text: str, field: str) -> object:
    """JSON within kt.bounds' limits (size and nesting checked before parsing)."""
    try:
        return bounds.loads(text, field=field)
    except bounds.BoundsError as e:
        if e.status == 413:
            raise RequestError(e.error, e.field, status=413) from e
        raise RequestError(e.error, e.field) from e


def input_fn(request_body: bytes | str, request_content_type: str | None) -> dict:
    """Parse a JSON request or a JSON Lines batch. Validation against skills happens in predict_fn."""
    content_type = (request_content_type or JSON).split(";")[0].strip().lower()
    if content_type not in (JSON, *JSON_LINES_TYPES):
        raise RequestError(
            f"unsupported content type {request_content_type!r}; use {JSON} or {JSON_LINES}", "Content-Type", 415
        )
    text = decode_text(request_body)
    if content_type == JSON:
        return {"batch": False, "lines": [_loads(text, "body")]}
    lines: list[object] = []
    for n, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            lines.append(_loads(line, f"line[{n}]"))
        except RequestError as e:
            lines.append(e)
    return {"batch": True, "lines": lines}


# --- stateful mode -------------------------------------------------------------


@dataclass
class UserState:
    h: torch.Tensor  # (layers, hidden)
    c: torch.Tensor  # (layers, hidden)
    answers: int  # answers fed so far
    skills: set[int]  # skills practiced so far (next_skill_recommendation picks among them)
    counts: torch.Tensor | None = None  # (S, 2) answers and right answers per skill (count_features models)

    def model_state(self) -> tuple[torch.Tensor, ...]:
        """What run_model continues from."""
        return (self.h, self.c) if self.counts is None else (self.h, self.c, self.counts)


def encode_state(model: LoadedModel, state: UserState) -> dict:
    """One user's state as the JSON object a client stores and sends back."""
    raw = torch.stack([state.h, state.c]).to(torch.float32).cpu().numpy().astype("<f4").tobytes()
    out = {"model_version": model.version, "answers": state.answers, "skills": sorted(state.skills),
           "lstm": base64.b64encode(raw).decode("ascii")}
    if model.model.config.count_features:
        counts = state.counts.round().to(torch.int64).tolist()
        out["counts"] = {str(s): counts[model.index[s]] for s in sorted(state.skills)}
    return out


def decode_state(model: LoadedModel, state: dict, field: str) -> UserState:
    """Check a state sent back by a client, or raise RequestError naming the field."""
    version = state.get("model_version")
    if version != model.version:
        raise RequestError(f"state was computed by model {version!r}, this endpoint serves {model.version!r}: "
                           "send the whole history without state", f"{field}.model_version", status=409)
    answers = state.get("answers")
    if not bounds.is_id(answers):
        raise RequestError(f"answers must be a count up to {bounds.INT32_MAX}", f"{field}.answers")
    skills = state.get("skills")
    if not isinstance(skills, list) or not all(bounds.is_id(s) and s in model.index for s in skills):
        raise RequestError("skills must list the skill ids practiced so far", f"{field}.skills")
    config = model.model.config
    try:
        raw = base64.b64decode(state.get("lstm") or "", validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise RequestError("lstm is not base64", f"{field}.lstm") from e
    expected = 2 * config.layers * config.hidden * 4
    if len(raw) != expected:
        raise RequestError(f"lstm has {len(raw)} bytes; this model's state has {expected}", f"{field}.lstm")
    values = np.frombuffer(raw, dtype="<f4").reshape(2, config.layers, config.hidden)
    if not np.isfinite(values).all():
        raise RequestError("lstm holds values that are not finite", f"{field}.lstm")
    hc = torch.from_numpy(values.astype(np.float32))
    counts = _decode_counts(model, state.get("counts"), set(skills), f"{field}.counts") \
        if config.count_features else None
    return UserState(hc[0], hc[1], answers, set(skills), counts)


def _decode_counts(model: LoadedModel, counts: object, skills: set[int], field: str) -> torch.Tensor:
    """The state's per-skill counts {"<skill_id>": [answers, right]} as (S, 2), or raise RequestError."""
    message = "counts must give [answers, right answers] for every practiced skill"
    if not isinstance(counts, dict):
        raise RequestError(message, field)
    out = torch.zeros(len(model.skill_ids), 2)
    seen = set()
    for key, value in counts.items():
        try:
            skill = int(key)
        except ValueError:
            raise RequestError(message, field) from None
        if (skill not in skills or not isinstance(value, list) or len(value) != 2 or not all(map(bounds.is_id, value))
                or not 0 <= value[1] <= value[0]):
            raise RequestError(message, f"{field}.{key}")
        out[model.index[skill]] = torch.tensor(value, dtype=torch.float32)
        seen.add(skill)
    if seen != skills:
        raise RequestError(message, field)
    return out


# --- prediction ----------------------------------------------------------------


@torch.no_grad()
def run_model(
    model: LoadedModel,
    sequences: list[list[tuple[int, int]]],
    states: list[tuple[torch.Tensor, ...] | None] | None = None,
    window: bool = True,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mastery (N, S) after each history, the LSTM state (layers, N, H) twice and the counts (N, S, 2), batched.

    ``states``: per row None or what to continue from: (h, c) (layers, H) each, and with
    ``count_features`` the counts (S, 2) (``UserState.model_state``); the counts returned are None without.
    ``window``: feed only the last max_seq_len answers (stateless); else all (stateful).
    A row with no answers keeps its state; with no answers and no state it gets the prior.
    A model without a recurrent state (``AttentionKT``, ``EnsembleKT``) takes no ``states``; h and c come back zero.
    """
    net = model.model
    net.eval()
    n, layers, hidden = len(sequences), net.config.layers, net.config.hidden
    states = states or [None] * n
    if window:
        sequences = [s[-net.config.max_seq_len :] for s in sequences]
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    probs = np.empty((n, len(model.skill_ids)), dtype=np.float32)
    h_all = torch.zeros(layers, n, hidden)
    c_all = torch.zeros(layers, n, hidden)
    counts_all = torch.zeros(n, len(model.skill_ids), 2) if net.recurrent and net.config.count_features else None
    for i, st in enumerate(states):
        if st is not None:
            h_all[:, i], c_all[:, i] = st[0], st[1]
            if counts_all is not None:
                counts_all[i] = st[2]
    order = np.argsort(lengths, kind="stable")  # similar lengths share a forward pass: little padding
    for rows in _chunks(order, lengths):
        rows_t = torch.from_numpy(rows)
        row_lengths = lengths[rows]
        longest = max(1, int(row_lengths.max()))
        flat = [a for i in rows for a in sequences[i]]
        skills = np.fromiter((model.index[s] for s, _ in flat), dtype=np.int64, count=len(flat))
        correct = np.fromiter((c for _, c in flat), dtype=np.int64, count=len(flat))
        tokens = np.zeros((len(rows), longest), dtype=np.int64)
        tokens[np.arange(longest) < row_lengths[:, None]] = encode(skills, correct)  # (b, T)
        state = (h_all[:, rows_t], c_all[:, rows_t]) if net.recurrent else None
        if counts_all is not None:
            state += (counts_all[rows_t],)
        p, new_state = net.step_state(torch.from_numpy(tokens), state, torch.from_numpy(row_lengths))
        probs[rows] = apply_temperature(p.numpy(), model.temperature)
        if new_state is not None:
            h_all[:, rows_t], c_all[:, rows_t] = new_state[0], new_state[1]
        if counts_all is not None:
            counts_all[rows_t] = new_state[2]
    untouched = [i for i in range(n) if lengths[i] == 0 and states[i] is None]
    probs[untouched] = np.asarray(model.prior, dtype=np.float32)
    return probs, h_all, c_all, counts_all


def _chunks(order: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Consecutive rows of the length order, each chunk within BATCH_TOKENS once padded to its longest."""
    chunks, start = [], 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * max(1, lengths[order[stop]]) <= BATCH_TOKENS:
            stop += 1
        chunks.append(order[start:stop])
        start = stop
    return chunks


def mastery_vectors(model: LoadedModel, sequences: list[list[tuple[int, int]]]) -> list[list[float]]:
    """P(correct) on every skill after each history (stateless), all histories in padded batches."""
    return run_model(model, sequences)[0].tolist()


def predict_fn(data: dict, model: LoadedModel) -> dict:
    """Mastery responses for every request; in a batch a bad line gets an error line, not a failed job."""
    parsed: list[UserRequest | RequestError] = []
    states: dict[int, UserState] = {}
    for n, line in enumerate(data["lines"]):
        if isinstance(line, RequestError):
            parsed.append(line)
            continue
        where = f"line[{n}]." if data["batch"] else ""
        try:
            request = parse_request(line, model.index, where)
            if request.state is not None and model.model.recurrent:
                states[n] = decode_state(model, request.state, f"{where}state")
            parsed.append(request)
        except RequestError as e:
            if not data["batch"]:
                raise
            parsed.append(e)
    good = [n for n, p in enumerate(parsed) if isinstance(p, UserRequest)]
    recurrent = model.model.recurrent  # else a stateful request is answered as a stateless one, "state": null
    stateless = [n for n in good if not (parsed[n].return_state and recurrent)]
    stateful = [n for n in good if parsed[n].return_state and recurrent]
    vectors: dict[int, np.ndarray] = {}
    new_states: dict[int, UserState] = {}
    if stateless:
        probs = run_model(model, [parsed[n].sequence for n in stateless])[0]
        vectors.update(zip(stateless, probs))
    if stateful:
        given = [states.get(n) for n in stateful]
        probs, h, c, counts = run_model(model, [parsed[n].sequence for n in stateful],
                                        [None if g is None else g.model_state() for g in given], window=False)
        for row, (n, before) in enumerate(zip(stateful, given)):
            vectors[n] = probs[row]
            sequence = parsed[n].sequence
            new_states[n] = UserState(h[:, row], c[:, row], len(sequence) + (before.answers if before else 0),
                                      {s for s, _ in sequence} | (before.skills if before else set()),
                                      None if counts is None else counts[row])
    rows = sorted(vectors)
    topic_rows = (np.stack([vectors[n] for n in rows]).astype(np.float64) @ model.topic_means).tolist() if rows else []
    topic_mastery = {n: dict(zip(model.topics, row)) for n, row in zip(rows, topic_rows)}
    results = []
    for n, p in enumerate(parsed):
        if isinstance(p, RequestError):
            line = data["lines"][n]
            extra = {k: line[k] for k in ("user_id", "as_of") if isinstance(line, dict) and k in line}
            results.append({**extra, "error": p.error, "field": p.field})
            continue
        mastery = dict(zip(model.skill_ids, vectors[n].tolist()))
        practiced = new_states[n].skills if n in new_states else {s for s, _ in p.sequence}
        body = response(mastery, practiced, topic_mastery[n], model.version)
        if n in new_states:
            body["state"] = encode_state(model, new_states[n])
        elif p.return_state:
            body["state"] = None
        if data["batch"]:
            body = {"user_id": p.user_id, "as_of": p.as_of, **body}
        results.append(body)
    return {"batch": data["batch"], "results": results}


def output_fn(prediction: dict, accept: str | None) -> str:
    """JSON for one request, JSON Lines for a batch."""
    accept_type = (accept or JSON).split(";")[0].strip().lower()
    if accept_type not in ACCEPT_TYPES:
        raise RequestError(f"unsupported accept type {accept!r}; use {JSON} or {JSON_LINES}", "Accept", 406)
    if prediction["batch"]:
        return "".join(json.dumps(r) + "\n" for r in prediction["results"])
    return json.dumps(prediction["results"][0])
