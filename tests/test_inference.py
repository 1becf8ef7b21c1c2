"""The inference handlers (docs/contracts.md §6), DKT and the attention models: every error case, the prior, batches, stateful mode, loading from the tarball."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from kt import artifact, inference
from kt.inference import JSON, JSON_LINES, MAX_ANSWERS, RequestError, input_fn, output_fn, predict_fn


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> inference.LoadedModel:
    return inference.model_fn(tiny_model_dir)


@pytest.fixture(scope="module")
def count_model_dir(sample_lake, tmp_path_factory) -> str:
    """The tiny model's training with count_features on."""
    from kt_testing import train_tiny_model

    return train_tiny_model(f"{sample_lake}/processed/ednet", str(tmp_path_factory.mktemp("count-model")),
                            "count-model", count_features=1)


@pytest.fixture(scope="module", params=["seed", "count_features"])
def any_model(request) -> inference.LoadedModel:
    """Both model kinds, for the paths that carry state: the seed's DKT and one with count_features."""
    if request.param == "seed":
        return request.getfixturevalue("model")
    return inference.model_fn(request.getfixturevalue("count_model_dir"))


def _history(model, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"skill_id": rng.choice(model.skill_ids), "correct": rng.randint(0, 1)} for _ in range(n)]


def _invoke(model, body, content_type: str = JSON, accept: str = JSON):
    out = output_fn(predict_fn(input_fn(body, content_type), model), accept)
    return json.loads(out) if accept == JSON else [json.loads(line) for line in out.splitlines()]


def _error(model, body, content_type: str = JSON, accept: str = JSON) -> RequestError:
    with pytest.raises(RequestError) as caught:
        _invoke(model, body, content_type, accept)
    return caught.value


# --- each error of docs/contracts.md §6.3: status, message, field, and the body the endpoint returns -------------


def test_malformed_json_is_a_400_naming_the_body(model):
    with pytest.raises(RequestError, match="malformed JSON: Expecting .* at line 1 column 2") as e:
        _invoke(model, b'{"user_sequence": [}')
    assert (e.value.status_code, e.value.field) == (400, "body")
    assert json.loads(e.value.message) == {"error": e.value.error, "field": "body"}  # the response body


def test_a_body_that_is_not_utf8_is_a_400(model):
    with pytest.raises(RequestError, match="not UTF-8"):
        _invoke(model, b'{"user_sequence": "\xff"}')


def test_wrong_content_type_is_a_415(model):
    with pytest.raises(RequestError, match="unsupported content type 'text/csv'") as e:
        _invoke(model, b"1,0", content_type="text/csv")
    assert (e.value.status_code, e.value.field) == (415, "Content-Type")


def test_bad_accept_is_a_406(model):
    with pytest.raises(RequestError, match="unsupported accept type 'text/html'") as e:
        _invoke(model, json.dumps({"user_sequence": []}), accept="text/html")
    assert (e.value.status_code, e.value.field) == (406, "Accept")


@pytest.mark.parametrize("body,field", [
    ([], "body"), ("just text", "body"), (None, "body"),
    ({"user_sequence": [["3", 1]]}, "user_sequence[0]"),
])
def test_a_request_or_answer_that_is_not_an_object_is_a_400(model, body, field):
    with pytest.raises(RequestError, match="must be .*object") as e:
        _invoke(model, json.dumps(body))
    assert (e.value.status_code, e.value.field) == (400, field)


@pytest.mark.parametrize("body,match,field", [
    ({}, "user_sequence is required", "user_sequence"),
    ({"user_sequence": [{"correct": 1}]}, "skill_id is required", "user_sequence[0].skill_id"),
    ({"user_sequence": [{"skill_id": 1, "correct": 1}, {"skill_id": 1}]}, "correct is required",
     "user_sequence[1].correct"),
    ({"user_sequence": {"skill_id": 1}}, "user_sequence must be a list", "user_sequence"),
])
def test_missing_fields_are_named(model, body, match, field):
    with pytest.raises(RequestError, match=match) as e:
        _invoke(model, json.dumps(body))
    assert (e.value.status_code, e.value.field) == (400, field)


@pytest.mark.parametrize("correct", [2, -1, "1", True, 1.0, None])
def test_correct_must_be_0_or_1(model, correct):
    body = {"user_sequence": [{"skill_id": 1, "correct": 0}, {"skill_id": 1, "correct": correct}]}
    with pytest.raises(RequestError, match="correct must be 0 or 1") as e:
        _invoke(model, json.dumps(body))
    assert e.value.field == "user_sequence[1].correct"


@pytest.mark.parametrize("skill", ["3", 3.0, None, True])
def test_skill_id_must_be_an_integer(model, skill):
    with pytest.raises(RequestError, match="skill_id must be an integer") as e:
        _invoke(model, json.dumps({"user_sequence": [{"skill_id": skill, "correct": 1}]}))
    assert e.value.field == "user_sequence[0].skill_id"


def test_unknown_skill_ids_are_all_listed(model):
    known = model.skill_ids[0]
    body = {"user_sequence": [{"skill_id": known, "correct": 1}, {"skill_id": 9999, "correct": 1},
                              {"skill_id": 8888, "correct": 0}, {"skill_id": 9999, "correct": 0}]}
    with pytest.raises(RequestError, match=r"unknown skill ids: \[8888, 9999\]") as e:
        _invoke(model, json.dumps(body))
    assert (e.value.status_code, e.value.field) == (400, "user_sequence[1].skill_id")


def test_too_long_is_a_413_stating_the_limit(model):
    body = {"user_sequence": [{"skill_id": model.skill_ids[0], "correct": 1}] * (MAX_ANSWERS + 1)}
    with pytest.raises(RequestError, match=f"has {MAX_ANSWERS + 1} answers; the limit is {MAX_ANSWERS}") as e:
        _invoke(model, json.dumps(body))
    assert (e.value.status_code, e.value.field) == (413, "user_sequence")
    body["user_sequence"].pop()
    assert len(_invoke(model, json.dumps(body))["mastery"]) == len(model.skill_ids)  # the limit itself is fine


@pytest.mark.parametrize("body,match,field", [
    ({"user_id": ["u"], "user_sequence": []}, "user_id must be a string", "user_id"),
    ({"as_of": 20261125, "user_sequence": []}, "as_of must be an ISO 8601 string", "as_of"),
    ({"return_state": "yes", "user_sequence": []}, "return_state must be true or false", "return_state"),
    ({"state": "abc", "user_sequence": []}, "state must be the object a previous response returned", "state"),
])
def test_optional_fields_are_checked_too(model, body, match, field):
    with pytest.raises(RequestError, match=match) as e:
        _invoke(model, json.dumps(body))
    assert e.value.field == field


# --- answers --------------------------------------------------------------------------------


def test_an_empty_sequence_returns_the_prior(model, tiny_model_dir):
    info = artifact.read_info(tiny_model_dir)
    out = _invoke(model, json.dumps({"user_sequence": []}))
    prior = dict(zip(map(str, info["skill_ids"]), info["base_rates"]))
    assert out["mastery"] == {k: round(v, 4) for k, v in prior.items()}
    weakest = min(info["skill_ids"], key=lambda s: (round(prior[str(s)], 4), s))
    assert out["next_skill_recommendation"] == weakest  # no history: the weakest skill overall
    assert out["predicted_accuracy"] == pytest.approx(np.mean(info["base_rates"]), abs=1e-4)
    assert out["model_version"] == info["model_version"]


def test_a_response_follows_design_section_6(model):
    history = _history(model, 30)
    out = _invoke(model, json.dumps({"user_sequence": history}))
    assert set(out) == {"mastery", "next_skill_recommendation", "predicted_accuracy", "topic_mastery", "model_version"}
    assert sorted(map(int, out["mastery"])) == model.skill_ids
    practiced = {a["skill_id"] for a in history}
    assert out["next_skill_recommendation"] == min(practiced, key=lambda s: (out["mastery"][str(s)], s))
    assert out["predicted_accuracy"] == pytest.approx(np.mean(list(out["mastery"].values())), abs=1e-3)
    assert set(out["topic_mastery"]) == set(model.skill_topics.values())
    assert out["mastery"] != _invoke(model, json.dumps({"user_sequence": []}))["mastery"]  # the history matters


def test_a_long_history_is_read_through_the_last_training_window(any_model):
    model = any_model
    window = model.model.config.max_seq_len
    history = _history(model, 3 * window + 7)
    full = _invoke(model, json.dumps({"user_sequence": history}))
    assert full["mastery"] == _invoke(model, json.dumps({"user_sequence": history[-window:]}))["mastery"]
    pairs = history_pairs(history)
    windowed = inference.run_model(model, [pairs])[0]
    assert np.array_equal(windowed, inference.run_model(model, [pairs[-window:]])[0])
    assert not np.array_equal(windowed, inference.run_model(model, [pairs], window=False)[0])  # all of it differs


def test_a_batch_is_one_response_per_line_and_a_bad_line_gets_an_error_line(model):
    users = [{"user_id": f"u{i}", "as_of": f"2026-11-2{i}T10:00:00.000Z", "user_sequence": _history(model, n, i)}
             for i, n in enumerate([5, 0, 60, 1])]
    lines = [json.dumps(users[0]), "{not json", json.dumps(users[1]), json.dumps(users[2]),
             json.dumps({"user_id": "bad", "user_sequence": [{"skill_id": 1, "correct": 7}]}), "", json.dumps(users[3])]
    out = _invoke(model, "\n".join(lines) + "\n", JSON_LINES, JSON_LINES)
    assert len(out) == 6  # the blank line is no record
    assert out[1]["error"].startswith("malformed JSON") and out[1]["field"] == "line[1]"
    assert out[4] == {"user_id": "bad", "error": "correct must be 0 or 1", "field": "line[4].user_sequence[0].correct"}
    for got, user in zip([out[0], out[2], out[3], out[5]], users):
        alone = _invoke(model, json.dumps({"user_sequence": user["user_sequence"]}))
        assert (got["user_id"], got["as_of"]) == (user["user_id"], user["as_of"])
        assert max(abs(got["mastery"][k] - v) for k, v in alone["mastery"].items()) <= 1e-4  # padding changes nothing


def test_a_batch_of_only_bad_lines_still_answers_every_line(model):
    out = _invoke(model, "[]\n{}\n", JSON_LINES, JSON_LINES)
    assert [o["field"] for o in out] == ["line[0]", "line[1].user_sequence"]


# --- stateful mode ------------------------------------------------------------------------------


def _state_of(model, history, state=None):
    body = {"user_sequence": history, "return_state": True, **({"state": state} if state else {})}
    return _invoke(model, json.dumps(body))


def test_feeding_only_new_answers_to_the_returned_state_equals_a_full_recompute(any_model):
    model = any_model
    history = _history(model, 3 * model.model.config.max_seq_len)  # longer than a window: all of it is fed
    full_probs, full_h, full_c, full_counts = inference.run_model(model, [history_pairs(history)], window=False)
    state = None
    for night in np.array_split(np.arange(len(history)), 4):  # four nights of new answers
        out = _state_of(model, [history[i] for i in night], state)
        state = out["state"]
    decoded = inference.decode_state(model, json.loads(json.dumps(state)), "state")
    probs, h, c, counts = inference.run_model(model, [[]], [decoded.model_state()], window=False)
    assert np.abs(probs - full_probs).max() < 1e-5
    assert torch.allclose(h[:, 0], full_h[:, 0], atol=1e-5) and torch.allclose(c[:, 0], full_c[:, 0], atol=1e-5)
    whole = _state_of(model, history)
    assert out["next_skill_recommendation"] == whole["next_skill_recommendation"]
    assert max(abs(out["mastery"][k] - v) for k, v in whole["mastery"].items()) <= 1e-4  # rounded to 4 places
    assert state["answers"] == len(history) and state["skills"] == sorted({a["skill_id"] for a in history})
    if model.model.config.count_features:  # the counts of the whole history, as a client reads them
        assert torch.equal(counts, full_counts)
        assert state["counts"] == {str(s): [sum(a["skill_id"] == s for a in history),
                                            sum(a["skill_id"] == s and a["correct"] for a in history)]
                                   for s in state["skills"]}
    else:
        assert counts is None and "counts" not in state


def history_pairs(history: list[dict]) -> list[tuple[int, int]]:
    return [(a["skill_id"], a["correct"]) for a in history]


def test_stateful_and_stateless_agree_within_one_window(any_model):
    model = any_model
    history = _history(model, model.model.config.max_seq_len)
    stateful = _state_of(model, history)
    assert stateful.pop("state")["model_version"] == model.version
    assert stateful == _invoke(model, json.dumps({"user_sequence": history}))


def test_a_state_from_another_model_or_mangled_is_refused(model):
    state = _state_of(model, _history(model, 5))["state"]
    other = dataclasses.replace(model, version="another-model")
    with pytest.raises(RequestError, match="state was computed by model .* send the whole history") as e:
        _invoke(other, json.dumps({"user_sequence": [], "state": state}))
    assert (e.value.status_code, e.value.field) == (409, "state.model_version")
    cases = [({**state, "lstm": "not base64!"}, "lstm is not base64", "state.lstm"),
             ({**state, "lstm": state["lstm"][:-8]}, "lstm has .* bytes; this model's state has", "state.lstm"),
             ({**state, "answers": -1}, "answers must be a count", "state.answers"),
             ({**state, "skills": [99999]}, "skills must list", "state.skills")]
    for bad, match, field in cases:
        with pytest.raises(RequestError, match=match) as e:
            _invoke(model, json.dumps({"user_sequence": [], "state": bad}))
        assert e.value.field == field


def test_batch_lines_can_be_stateful(any_model):
    model = any_model
    first = _state_of(model, _history(model, 12))["state"]
    lines = [{"user_id": "a", "user_sequence": _history(model, 3, 1), "state": first},
             {"user_id": "b", "user_sequence": _history(model, 4, 2)},
             {"user_id": "c", "user_sequence": [], "state": {**first, "model_version": "old"}}]
    out = _invoke(model, "\n".join(json.dumps(x) for x in lines), JSON_LINES, JSON_LINES)
    assert out[0]["state"]["answers"] == 15 and "state" not in out[1]
    assert out[2]["field"] == "line[2].state.model_version"


def test_model_json_records_count_features_and_the_state_carries_checked_counts(count_model_dir):
    assert artifact.read_info(count_model_dir)["config"]["count_features"] is True
    model = inference.model_fn(count_model_dir)
    assert model.model.config.count_features
    history = [{"skill_id": model.skill_ids[0], "correct": 1}, {"skill_id": model.skill_ids[1], "correct": 0},
               {"skill_id": model.skill_ids[0], "correct": 0}]
    state = _state_of(model, history)["state"]
    first, second = map(str, model.skill_ids[:2])
    assert state["counts"] == {first: [2, 1], second: [1, 0]}
    more = [{"skill_id": model.skill_ids[1], "correct": 1}]
    carried, whole = _state_of(model, more, state), _state_of(model, history + more)
    carried["state"].pop("lstm"), whole["state"].pop("lstm")  # equal within float32 rounding
    assert carried == whole and carried["state"]["counts"] == {first: [2, 1], second: [2, 1]}  # the counts carry on
    cases = [({k: v for k, v in state.items() if k != "counts"}, "state.counts"),
             ({**state, "counts": {first: [2, 1]}}, "state.counts"),  # a practiced skill missing
             ({**state, "counts": {**state["counts"], first: [1, 2]}}, f"state.counts.{first}"),
             ({**state, "counts": {**state["counts"], first: [2]}}, f"state.counts.{first}"),
             ({**state, "counts": {**state["counts"], str(model.skill_ids[2]): [1, 1]}},
              f"state.counts.{model.skill_ids[2]}")]  # a skill the state does not list
    for bad, field in cases:
        with pytest.raises(RequestError, match="counts must give") as e:
            _invoke(model, json.dumps({"user_sequence": [], "state": bad}))
        assert e.value.field == field


# --- the handlers as the containers load them -----------------------------------------------------------


class _ToolkitContext:
    """What TorchServe hands the inference toolkit's Transformer, reduced to what it reads."""

    def __init__(self, model_dir: str, headers: dict):
        self.system_properties = {"model_dir": model_dir}
        self.request_processor = [self]
        self.headers, self.status, self.content_type = headers, None, None

    def get_request_properties(self) -> dict:
        return self.headers

    def set_response_status(self, code: int, phrase: str) -> None:
        self.status = (code, phrase)

    def set_response_content_type(self, index: int, content_type: str) -> None:
        self.content_type = content_type


def test_the_inference_toolkit_keeps_our_status_codes(tiny_model_dir, monkeypatch):
    """sagemaker_inference's Transformer (the PyTorch container's) on our code/inference.py."""
    from sagemaker_inference.transformer import Transformer

    monkeypatch.syspath_prepend(os.path.join(tiny_model_dir, "code"))
    monkeypatch.delitem(sys.modules, "inference", raising=False)
    transformer = Transformer()
    ok = _ToolkitContext(tiny_model_dir, {"Content-Type": JSON, "Accept": JSON})
    (body,) = transformer.transform([{"body": json.dumps({"user_sequence": []}).encode()}], ok)
    assert ok.status is None and set(json.loads(body)) >= {"mastery", "model_version"}
    bad = _ToolkitContext(tiny_model_dir, {"Content-Type": JSON, "Accept": JSON})
    (body,) = transformer.transform([{"body": b'{"user_sequence": [{"skill_id": 1, "correct": 5}]}'}], bad)
    assert bad.status == (400, "correct must be 0 or 1")
    assert json.loads(body.splitlines()[0]) == {"error": "correct must be 0 or 1", "field": "user_sequence[0].correct"}
    monkeypatch.delitem(sys.modules, "inference", raising=False)


def test_handlers_load_from_the_tarball_alone(tiny_model_dir, tmp_path):
    """As the container: only <model>/code on the path (and no checkout), import inference, model_fn, a request."""
    artifact.pack(tiny_model_dir, str(tmp_path / "model.tar.gz"))
    model_dir = artifact.unpack(str(tmp_path / "model.tar.gz"), str(tmp_path / "model"))
    code = os.path.join(model_dir, "code")
    script = (
        "import json, sys\n"
        "sys.path = [p for p in sys.path if not p.endswith('src')]\n"  # the editable install's path entry
        "import inference\n"
        "m = inference.model_fn(sys.argv[1])\n"
        "out = inference.output_fn(inference.predict_fn(inference.input_fn(sys.argv[2], 'application/json'), m), None)\n"
        "files = {n: getattr(v, '__file__', '') for n, v in sys.modules.items() if n == 'kt' or n.startswith('kt.')}\n"
        "print(json.dumps({'out': json.loads(out), 'files': files}))\n"
    )
    body = json.dumps({"user_sequence": [{"skill_id": 1, "correct": 1}]})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": code}
    result = subprocess.run([sys.executable, "-P", "-c", script, model_dir, body], env=env, capture_output=True,
                            text=True, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["files"] and all(f.startswith(code) for f in report["files"].values())
    assert report["out"] == json.loads(output_fn(predict_fn(input_fn(body, JSON), inference.model_fn(tiny_model_dir)),
                                                 JSON))


def test_topic_mastery_is_mean_by_topic(model):
    """predict_fn averages topics with one matrix product: the same numbers as kt.mastery.mean_by_topic."""
    from kt.mastery import mean_by_topic

    skill_topics = {**model.skill_topics}
    skill_topics.pop(model.skill_ids[0])  # an unmapped skill goes to `other`
    loaded = dataclasses.replace(model, skill_topics=skill_topics)
    probs = np.random.default_rng(0).random((3, len(model.skill_ids)))
    for row in probs:
        expected = mean_by_topic(dict(zip(model.skill_ids, row.tolist())), skill_topics)
        assert list(expected) == loaded.topics and "other" in expected
        assert np.allclose(row @ loaded.topic_means, list(expected.values()), atol=1e-12)


def test_forward_passes_stay_within_the_token_budget():
    lengths = np.array([1, 5, 200, 200, 10_000, 0, 3] + [200] * 300)
    order = np.argsort(lengths, kind="stable")
    chunks = inference._chunks(order, lengths)
    assert np.array_equal(np.concatenate(chunks), order)  # every row once, in length order
    assert all(len(c) * max(1, lengths[c].max()) <= inference.BATCH_TOKENS or len(c) == 1 for c in chunks)
    assert [len(c) for c in chunks][-1] == 1  # the 10,000-answer history alone


@pytest.fixture(scope="module", params=["attn", "ensemble"])
def attention_model_dir(request, sample_lake, tmp_path_factory) -> str:
    """The tiny model's training with model=attn, and =ensemble (one member of each kind)."""
    from kt_testing import train_tiny_model

    members = {"members": "dkt+dkt_counts+attn+gru"} if request.param == "ensemble" else {}
    return train_tiny_model(f"{sample_lake}/processed/ednet", str(tmp_path_factory.mktemp(f"{request.param}-model")),
                            f"{request.param}-model", model=request.param, **members)


def test_the_attention_model_is_served_stateless_and_says_it_keeps_no_state(attention_model_dir, model):
    name = artifact.read_info(attention_model_dir)["model"]
    attn = inference.model_fn(attention_model_dir)
    assert name in ("attn", "ensemble") and type(attn.model).__name__ == {"attn": "AttentionKT",
                                                                          "ensemble": "EnsembleKT"}[name]
    assert not attn.model.recurrent
    window = attn.model.config.max_seq_len
    history = _history(attn, window + 9)
    stateless = _invoke(attn, json.dumps({"user_sequence": history}))
    # the mastery is the model's output after the last max_seq_len answers, through model.json's temperature
    pairs = [(attn.index[a["skill_id"]], a["correct"]) for a in history[-window:]]
    tokens = torch.tensor([[s * 2 + c for s, c in pairs]])
    expected = inference.apply_temperature(attn.model(tokens)[0][0, -1].detach().numpy(), attn.temperature)
    assert np.allclose([stateless["mastery"][str(s)] for s in attn.skill_ids], expected, atol=6e-5)  # 4 decimals
    # stateful requests: answered from the answers sent, "state": null; a state sent is not read
    asked = _invoke(attn, json.dumps({"user_sequence": history, "return_state": True}))
    assert asked.pop("state") is None and asked == stateless
    dkt_state = _invoke(model, json.dumps({"user_sequence": history[:3], "return_state": True}))["state"]
    sent = _invoke(attn, json.dumps({"user_sequence": history, "state": dkt_state}))
    assert sent.pop("state") is None and sent == stateless
    lines = [json.dumps({"user_id": "a", "user_sequence": history, "return_state": True}),
             json.dumps({"user_id": "b", "user_sequence": history[:4]})]
    batch = _invoke(attn, "\n".join(lines), JSON_LINES, JSON_LINES)
    assert batch[0]["state"] is None and "state" not in batch[1]
    assert batch[0]["mastery"] == stateless["mastery"]
    assert _invoke(attn, json.dumps({"user_sequence": []}))["mastery"] == pytest.approx(
        dict(zip(map(str, attn.skill_ids), attn.prior)), abs=6e-5)  # the prior, to 4 decimals
