"""DKT and the attention model: shapes, the token encoding, causality and the masking of padded positions."""

import pytest
import torch

from kt.data import SkillVocab, Window, bucketed_batches, collate, make_windows
from kt.model import DKT, AttentionConfig, AttentionKT, DKTConfig, EnsembleKT, build_model, encode

import numpy as np


def _model(num_skills=7, **kw) -> DKT:
    torch.manual_seed(0)
    return DKT(DKTConfig(num_skills=num_skills, hidden=8, layers=2, dropout=0.0, **kw))


def test_shapes_and_probabilities():
    model = _model()
    tokens = torch.randint(0, 14, (3, 5))
    targets = torch.stack([torch.randint(0, 7, (3, 5)), torch.randint(0, 2, (3, 5))], dim=-1)
    probs, loss = model(tokens, targets, torch.ones(3, 5, dtype=torch.bool))
    assert probs.shape == (3, 5, 7)
    assert ((probs > 0) & (probs < 1)).all()
    assert loss.ndim == 0 and loss > 0
    assert model(tokens)[1] is None


def test_encode_is_skill_times_two_plus_correct():
    assert encode(torch.tensor([0, 0, 3, 3]), torch.tensor([0, 1, 0, 1])).tolist() == [0, 1, 6, 7]


def test_padding_does_not_change_the_loss():
    model = _model()
    short = Window(0, 0, np.array([1, 2, 3]), np.array([1, 0, 1]))
    long = Window(1, 0, np.array([4, 5, 6, 1, 2, 3]), np.array([0, 0, 1, 1, 1, 0]))
    alone = collate([short])
    padded = collate([short, long])
    assert padded["tokens"].shape == (2, 5) and padded["mask"][0].tolist() == [True, True, False, False, False]
    _, loss_alone = model(alone["tokens"], alone["targets"], alone["mask"])
    # the loss of the padded batch is the mean over real targets only: recompute it by hand
    probs, loss_both = model(padded["tokens"], padded["targets"], padded["mask"])
    picked = probs.gather(-1, padded["targets"][..., :1]).squeeze(-1)[padded["mask"]]
    y = padded["targets"][..., 1][padded["mask"]].float()
    manual = torch.nn.functional.binary_cross_entropy(picked, y)
    assert torch.allclose(loss_both, manual, atol=1e-6)
    # and the short row's predictions do not depend on what pads it
    assert torch.allclose(model(alone["tokens"])[0][0], probs[0, :2], atol=1e-6)
    padded["tokens"][0, 2:] = 13  # garbage in the padding
    probs2, loss2 = model(padded["tokens"], padded["targets"], padded["mask"])
    assert torch.allclose(loss2, loss_both)


def test_targets_are_the_next_answer():
    batch = collate([Window(0, 0, np.array([2, 5, 1]), np.array([1, 0, 1]))])
    assert batch["tokens"][0].tolist() == [5, 10]  # (2,1) -> 5, (5,0) -> 10
    assert batch["targets"][0].tolist() == [[5, 0], [1, 1]]


def test_batches_group_similar_lengths_and_are_reproducible():
    windows = [Window(i, 0, np.zeros(n, int), np.zeros(n, int)) for i, n in enumerate([2, 50, 3, 49, 2, 51])]
    batches = bucketed_batches(windows, 2, seed=1, epoch=0)
    assert sorted(sorted(len(windows[i].skills) for i in b) for b in batches) == [[2, 2], [3, 49], [50, 51]]
    assert batches == bucketed_batches(windows, 2, seed=1, epoch=0)


def test_vocab_maps_ids_to_dense_indices():
    vocab = SkillVocab([40, 7, 7, 12])
    assert vocab.skill_ids == [7, 12, 40]
    assert vocab.indices(np.array([12, 40, 99, 7])).tolist() == [1, 2, -1, 0]


def test_context_windows_predict_every_answer_once_with_warm_state():
    import pyarrow as pa

    from kt.evaluate import predict_windows, target_positions

    lengths = [1, 2, 7, 10, 11, 23]
    rng = np.random.default_rng(0)
    skills = [rng.integers(1, 5, n).tolist() for n in lengths]
    correct = [rng.integers(0, 2, n).tolist() for n in lengths]
    table = pa.table({"skill_id": skills, "correct": correct})
    vocab = SkillVocab([1, 2, 3, 4])
    plain = make_windows(table, vocab, max_seq_len=6)
    warm = make_windows(table, vocab, max_seq_len=6, context=3)
    expected = [(row, pos) for row, n in enumerate(lengths) for pos in range(1, n)]
    rows, positions = target_positions(warm)
    warm_targets = list(zip(rows.tolist(), positions.tolist()))
    assert warm_targets == expected  # every answer but a user's first, once, in order
    rows, positions = target_positions(plain)
    plain_targets = list(zip(rows.tolist(), positions.tolist()))
    # cold windows never predict their first answer: one answer in six goes unscored
    assert set(expected) - set(plain_targets) == {(2, 6), (3, 6), (4, 6), (5, 6), (5, 12), (5, 18)}
    # past a user's first window, every scored answer follows `context` fed answers
    assert all(w.scored_from == (3 if w.start else 0) and len(w.skills) > w.scored_from for w in warm)
    model = _model(num_skills=4, max_seq_len=6)
    y_plain, p_plain = predict_windows(model, plain)
    y_warm, p_warm = predict_windows(model, warm)
    plain_p = dict(zip(plain_targets, p_plain))
    warm_p = dict(zip(warm_targets, p_warm))
    first_window = [t for t in expected if t[1] < 6]  # the same window in both: the same predictions
    assert np.allclose([plain_p[t] for t in first_window], [warm_p[t] for t in first_window], atol=1e-6)
    later = [t for t in plain_targets if t[1] > 6]  # a warm state changes the rest
    assert not np.allclose([plain_p[t] for t in later], [warm_p[t] for t in later], atol=1e-4)


# --- count_features (opt in) ---------------------------------------------------------------------


def test_the_seed_model_has_no_count_parameters():
    """Models trained before count_features load as they are: the default adds nothing to the state dict."""
    assert DKTConfig(num_skills=3).count_features is False
    assert not any(k.startswith("count") for k in _model().state_dict())
    assert {"count_out.0.weight", "count_skill", "count_in.weight"} <= set(_model(count_features=True).state_dict())


def test_running_counts_count_each_skills_answers_and_right_answers_up_to_each_token():
    model = _model(num_skills=3, count_features=True)
    skills, correct = torch.tensor([[0, 2, 0, 0, 1]]), torch.tensor([[1, 0, 0, 1, 1]])
    running = model.running_counts(encode(skills, correct))  # (1, 5, 3, 2)
    assert running[0, :, 0].tolist() == [[1, 1], [1, 1], [2, 1], [3, 2], [3, 2]]  # skill 0: answers, right
    assert running[0, -1].tolist() == [[3, 2], [1, 1], [1, 0]]
    start = torch.tensor([[[4.0, 1.0], [0, 0], [2, 2]]])
    padded = model.running_counts(encode(skills, correct), start, lengths=torch.tensor([2]))
    assert padded[0, -1].tolist() == [[5, 2], [0, 0], [3, 2]]  # from `start` on; padding counts for nothing


def test_count_features_change_the_predictions_and_padding_still_does_not():
    torch.manual_seed(1)
    model = _model(count_features=True)
    with torch.no_grad():
        model.count_skill.normal_()  # initialised at zero: make the per-skill term matter
    plain = _model()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("count")})
    tokens = torch.randint(0, 14, (2, 9))
    assert not torch.allclose(model(tokens)[0], plain(tokens)[0], atol=1e-3)
    short, padded = tokens[:1, :4], tokens.clone()
    padded[0, 4:] = 13  # garbage after the real tokens
    assert torch.allclose(model(short)[0][0], model(padded)[0][0, :4], atol=1e-6)


@pytest.mark.parametrize("count_features,cell", [(False, "lstm"), (True, "lstm"), (False, "gru"), (True, "gru")])
def test_step_state_in_pieces_equals_one_pass_over_the_whole_sequence(count_features, cell):
    """Serving continues from a returned state (stateful mode): the result equals a full recompute."""
    torch.manual_seed(2)
    model = _model(count_features=count_features, cell=cell).eval()
    if count_features:
        with torch.no_grad():
            model.count_skill.normal_()
    tokens = torch.randint(0, 14, (3, 12))
    with torch.no_grad():
        full = model(tokens)[0][:, -1]  # after the last token
        whole, _ = model.step_state(tokens)
        state = None
        for lo, hi in [(0, 5), (5, 6), (6, 12)]:
            probs, state = model.step_state(tokens[:, lo:hi], state)
        # ragged rows: padded at the end, lengths say where each stops (0 keeps the state)
        ragged = torch.zeros(3, 7, dtype=torch.long)
        ragged[0, :7], ragged[2, :3] = tokens[0, 5:12], tokens[2, 5:8]
        _, first = model.step_state(tokens[:, :5])
        _, mid = model.step_state(ragged, first, torch.tensor([7, 0, 3]))
        rest = torch.zeros(3, 7, dtype=torch.long)
        rest[1, :7], rest[2, :4] = tokens[1, 5:12], tokens[2, 8:12]
        last, end = model.step_state(rest, mid, torch.tensor([0, 7, 4]))
    assert len(state) == (3 if count_features else 2)
    if cell == "gru":  # no cell state: c stays zeros
        assert not state[1].any() and state[0].any()
    assert torch.allclose(whole, full, atol=1e-5) and torch.allclose(probs, full, atol=1e-5)
    assert torch.allclose(last, full, atol=1e-5)
    for a, b in zip(end, state):
        assert torch.allclose(a, b, atol=1e-5)


def _attention(num_skills=7, name="attn") -> AttentionKT | EnsembleKT:
    torch.manual_seed(0)
    return build_model(name, {"num_skills": num_skills, "hidden": 8, "layers": 2, "heads": 2, "dropout": 0.0})


@pytest.mark.parametrize("name", ["attn", "ensemble"])
def test_attention_model_has_dkt_shapes_and_sees_only_the_past(name):
    model = _attention(name=name).eval()
    tokens = torch.randint(0, 14, (3, 6))
    targets = torch.stack([torch.randint(0, 7, (3, 6)), torch.randint(0, 2, (3, 6))], dim=-1)
    probs, loss = model(tokens, targets, torch.ones(3, 6, dtype=torch.bool))
    assert probs.shape == (3, 6, 7) and ((probs > 0) & (probs < 1)).all() and loss.ndim == 0 and loss > 0
    changed = tokens.clone()
    changed[:, 4:] = (changed[:, 4:] + 3) % 14  # the future: steps 0..3 must not move, step 4 must
    after = model(changed)[0]
    assert torch.allclose(after[:, :4], probs[:, :4], atol=1e-6) and not torch.allclose(after[:, 4], probs[:, 4])


@pytest.mark.parametrize("name", ["attn", "ensemble"])
def test_attention_step_state_reads_each_row_at_its_own_length_and_has_no_state(name):
    model = _attention(name=name).eval()
    tokens = torch.randint(0, 14, (3, 6))
    whole = model(tokens)[0]  # (B, T, S)
    probs, state = model.step_state(tokens, None, torch.tensor([6, 2, 4]))
    assert state is None
    assert torch.allclose(probs, torch.stack([whole[0, 5], whole[1, 1], whole[2, 3]]), atol=1e-6)
    with pytest.raises(ValueError, match="no recurrent state"):
        model.step_state(tokens, (torch.zeros(1),))


def test_the_ensemble_averages_its_members_logits_and_sums_their_losses():
    model = _attention(name="ensemble").eval()
    assert [type(m).__name__ for m in model.members] == ["DKT", "AttentionKT"]  # the default members
    tokens = torch.randint(0, 14, (2, 5))
    targets = torch.stack([torch.randint(0, 7, (2, 5)), torch.randint(0, 2, (2, 5))], dim=-1)
    probs, loss = model(tokens, targets)
    (p_dkt, l_dkt), (p_attn, l_attn) = model.members[0](tokens, targets), model.members[1](tokens, targets)
    assert torch.allclose(torch.logit(probs), (torch.logit(p_dkt) + torch.logit(p_attn)) / 2, atol=1e-5)
    assert torch.allclose(loss, l_dkt + l_attn)


def test_an_ensemble_of_one_kind_holds_differently_initialised_members():
    torch.manual_seed(0)
    model = build_model("ensemble", {"num_skills": 7, "hidden": 8, "heads": 2,
                                     "members": ["dkt", "dkt", "dkt_counts", "gru"]})
    assert [type(m).__name__ for m in model.members] == ["DKT"] * 4
    assert [m.config.count_features for m in model.members] == [False, False, True, False]
    assert [m.config.cell for m in model.members] == ["lstm"] * 3 + ["gru"]
    assert any(k.startswith("members.3.gru.") for k in model.state_dict())  # a GRU, under its own keys
    assert not any(k.startswith("members.3.lstm.") for k in model.state_dict())
    heads = [m.head.weight for m in model.members]
    assert not torch.equal(heads[0], heads[1]) and not torch.equal(heads[1], heads[2])
    model.eval()
    tokens = torch.randint(0, 14, (2, 5))
    probs, _ = model.step_state(tokens, None, torch.tensor([5, 3]))
    each = torch.stack([torch.logit(m.step_state(tokens, None, torch.tensor([5, 3]))[0]) for m in model.members])
    assert torch.allclose(torch.logit(probs), each.mean(0), atol=1e-5)
    with pytest.raises(ValueError,
                       match="ensemble members: expected names among dkt, dkt_counts, attn, gru, got dkt,sakt"):
        build_model("ensemble", {"num_skills": 7, "members": ["dkt", "sakt"]})


def test_attention_forgets_with_distance_from_the_start():
    """The learned penalty starts as ALiBi's slopes: a positive decay per head and layer, none for the same step."""
    model = _attention()
    assert model.decay.shape == (2, 2) and (torch.nn.functional.softplus(model.decay) > 0).all()
    with pytest.raises(ValueError, match="multiple of heads"):
        AttentionKT(AttentionConfig(num_skills=3, hidden=10, heads=4))


def test_build_model_picks_by_name_and_rejects_others():
    assert isinstance(build_model("dkt", {"num_skills": 3, "hidden": 8}), DKT)
    assert isinstance(build_model("attn", {"num_skills": 3, "hidden": 8, "heads": 2}), AttentionKT)
    assert isinstance(build_model("ensemble", {"num_skills": 3, "hidden": 8, "heads": 2}), EnsembleKT)
    with pytest.raises(ValueError, match="unknown model 'sakt'"):
        build_model("sakt", {"num_skills": 3})
