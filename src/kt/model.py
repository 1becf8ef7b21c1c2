"""The knowledge tracing models (docs/contracts.md §5.1): DKT and an attention model, selected by name.

Deep Knowledge Tracing (Piech et al. 2015), as in the seed:

Token ``skill_index*2 + correct`` -> Embedding -> 2-layer LSTM -> Linear to
num_skills -> sigmoid: row t holds P(correct) on every skill at step t+1.
The loss is BCE of the prediction for the NEXT interaction's skill against
its correctness, over unpadded positions only.

Opt-in ``count_features``: the model also reads how often each skill was
answered, and answered right, in the answers it was fed (a running count,
carried in the state like the LSTM's h and c). The answered skill's counts and
log1p(answers so far) are added to the token's embedding, and every skill's
logit gets a learned function of its own counts (a small MLP shared by all
skills plus a linear term per skill). An LSTM of the demo's size tracks such
counts poorly; with them, test AUC on the simulated demo data rises from 0.738
to 0.750 (oracle 0.775). Everything stays a function of the (skill, correct)
history, so training, evaluation and serving (stateless or stateful) agree.

``cell="gru"`` (an ensemble's ``gru`` members) runs GRU layers (Cho et al. 2014) in
place of the LSTM's: as accurate alone, wrong on different answers, which is what
an ensemble gains from. A GRU has no cell state; c is carried as zeros.

``AttentionKT`` (``model=attn``), the second architecture, reads the same tokens
and gives the same output: SAKT's causal self-attention over past interactions
(Pandey & Karypis 2019), with AKT's forgetting (Ghosh et al. 2020: attention
decays with the distance to a past answer) as a learned per-head linear penalty
on that distance (ALiBi, Press et al. 2022; no position embedding), and DKT's
read-out: a linear map from the state after step t to every skill's logit. A
per-skill query as in SAKT/AKT would cost a pass per skill to answer "mastery on
every skill"; the read-out answers it in one. It has no recurrent state: serving
recomputes from the last ``max_seq_len`` answers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence


@dataclass
class DKTConfig:
    num_skills: int
    hidden: int = 128
    layers: int = 2
    max_seq_len: int = 200  # histories are cut into windows of this many answers
    dropout: float = 0.2
    count_features: bool = False  # also read running per-skill answer counts (see the module docstring)
    cell: str = "lstm"  # the recurrent layers: "lstm", or "gru" (an ensemble's gru members)

    def __post_init__(self):
        if self.cell not in RECURRENT_CELLS:
            raise ValueError(f"DKT cell: expected one of {', '.join(RECURRENT_CELLS)}, got {self.cell!r}")

    def to_dict(self) -> dict:
        return asdict(self)


RECURRENT_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def encode(skill_index: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """The one token encoder, shared by training and inference."""
    return skill_index * 2 + correct


COUNT_FEATURES = 3  # per skill: log1p of answers, of right answers, of wrong answers
COUNT_HIDDEN = 16


def count_features(counts: torch.Tensor) -> torch.Tensor:
    """(..., 2) answers and right answers -> (..., COUNT_FEATURES)."""
    answered, right = counts.unbind(-1)
    return torch.log1p(torch.stack([answered, right, answered - right], dim=-1))


def next_step_loss(
    logits: torch.Tensor, targets: torch.Tensor | None, mask: torch.Tensor | None
) -> torch.Tensor | None:
    """BCE of the logit (B, T, S) picked for each next answer's skill against its correctness, masked positions
    only (targets (B, T, 2): skill index, correct); None without targets. Every model's loss."""
    if targets is None:
        return None
    picked = logits.gather(-1, targets[..., 0:1]).squeeze(-1)  # (B, T)
    if mask is None:
        mask = torch.ones_like(picked, dtype=torch.bool)
    return F.binary_cross_entropy_with_logits(picked[mask], targets[..., 1][mask].float())


class DKT(nn.Module):
    recurrent = True  # step_state returns a state to continue from (stateful serving, §6.4)

    def __init__(self, config: DKTConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(2 * config.num_skills, config.hidden)
        # named after its cell, so an LSTM's weights keep the keys ("lstm.*") of every model.pth before GRUs
        setattr(self, config.cell, RECURRENT_CELLS[config.cell](
            config.hidden, config.hidden, num_layers=config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        ))
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.num_skills)
        if config.count_features:
            # every skill's logit += f(its counts): an MLP shared by all skills + a linear term per skill
            self.count_out = nn.Sequential(
                nn.Linear(COUNT_FEATURES, COUNT_HIDDEN), nn.Tanh(), nn.Linear(COUNT_HIDDEN, 1)
            )
            self.count_skill = nn.Parameter(torch.zeros(config.num_skills, COUNT_FEATURES))
            # the input: the answered skill's counts and log1p(answers so far), added to the embedding
            self.count_in = nn.Linear(COUNT_FEATURES + 1, config.hidden)

    def _recur(self, x, state: tuple[torch.Tensor, torch.Tensor] | None):
        """The recurrent layers over x from state (h, c) (None: zeros): (output, (h, c)).

        A GRU has no cell state: it carries c through unchanged (zeros), so the state keeps one form (§6.4)."""
        if self.config.cell == "lstm":
            return self.lstm(x, state)
        output, h = self.gru(x, None if state is None else state[0])
        return output, (h, torch.zeros_like(h) if state is None else state[1])

    def running_counts(
        self, tokens: torch.Tensor, counts: torch.Tensor | None = None, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, S, 2): answers and right answers per skill after each token, from ``counts`` (B, S, 2) on.

        Tokens at or past a row's ``lengths`` (padding) count for nothing.
        """
        b, t = tokens.shape
        step = F.one_hot(tokens // 2, self.config.num_skills).to(torch.float32)  # (B, T, S)
        if lengths is not None:
            step = step * (torch.arange(t, device=tokens.device) < lengths.to(tokens.device)[:, None])[..., None]
        right = step * (tokens % 2)[..., None]
        running = torch.stack([step, right], dim=-1).cumsum(1)
        return running if counts is None else running + counts[:, None]

    def _inputs(self, tokens: torch.Tensor, running: torch.Tensor | None) -> torch.Tensor:
        """The LSTM's input (B, T, H): the token's embedding (+ the answered skill's counts)."""
        x = self.embedding(tokens)
        if running is None:
            return x
        own = running.gather(2, (tokens // 2)[..., None, None].expand(-1, -1, 1, 2)).squeeze(2)  # (B, T, 2)
        answers = running[..., 0].sum(-1, keepdim=True)  # (B, T, 1) answers so far
        return x + self.count_in(torch.cat([count_features(own), torch.log1p(answers)], dim=-1))

    def _logits(self, h: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
        """Logits on every skill (..., S) from the LSTM output (..., H) (+ every skill's counts (..., S, 2))."""
        logits = self.head(self.dropout(h))
        if counts is not None:
            f = count_features(counts)
            logits = logits + self.count_out(f).squeeze(-1) + (f * self.count_skill).sum(-1)
        return logits

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Probabilities for every skill after each step, and the masked next-step loss.

        tokens (B, T) long; targets (B, T, 2) long = next skill index and correctness
        aligned with tokens (target t is the answer after token t); mask (B, T) bool;
        state: the recurrent layers' (h, c) to start from (the counts start from zero).
        """
        running = self.running_counts(tokens) if self.config.count_features else None  # from 0 at the window's start
        h, _ = self._recur(self._inputs(tokens, running), state)  # (B, T, H)
        logits = self._logits(h, running)  # (B, T, S)
        return torch.sigmoid(logits), next_step_loss(logits, targets, mask)

    def step_state(
        self,
        tokens: torch.Tensor,
        state: tuple[torch.Tensor, ...] | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Probabilities after each row's last real token and the state there (serving, stateful or not).

        tokens (B, T) long, padded at the end; lengths (B,) real tokens per row (default T; 0 keeps the
        given state); state (h, c), each (layers, B, H), to continue from (default zeros), followed with
        ``count_features`` by the counts (B, S, 2). The state returned has the same form.
        """
        b, t = tokens.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        if state is None:
            zeros = torch.zeros(self.config.layers, b, self.config.hidden, device=tokens.device)
            state = (zeros, zeros.clone())
            if self.config.count_features:
                state += (torch.zeros(b, self.config.num_skills, 2, device=tokens.device),)
        fed = lengths > 0
        h, c = state[0], state[1]
        running = None
        if self.config.count_features:
            running = self.running_counts(tokens, state[2], lengths)  # (B, T, S, 2)
        if bool(fed.any()):
            x = self._inputs(tokens[fed], None if running is None else running[fed])  # (b', T, H)
            if bool((lengths[fed] != t).any()):  # packed: the state stops at each row's own last token
                x = pack_padded_sequence(x, lengths[fed].cpu(), batch_first=True, enforce_sorted=False)
            _, (h_fed, c_fed) = self._recur(x, (h[:, fed].contiguous(), c[:, fed].contiguous()))  # (L, b', H)
            if bool(fed.all()):
                h, c = h_fed, c_fed
            else:
                h, c = h.clone(), c.clone()
                h[:, fed], c[:, fed] = h_fed, c_fed
        counts = None if running is None else running[:, -1]  # padding counts for nothing: the last real token's
        probs = torch.sigmoid(self._logits(h[-1], counts))  # (B, S); the top layer's h is its last output
        return probs, (h, c) if counts is None else (h, c, counts)


@dataclass
class AttentionConfig:
    num_skills: int
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    max_seq_len: int = 200  # histories are cut into windows of this many answers
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class AttentionBlock(nn.Module):
    """Pre-norm causal self-attention + feed-forward; ``bias`` (heads, T, T) carries the mask and the forgetting."""

    def __init__(self, config: AttentionConfig):
        super().__init__()
        self.heads = config.heads
        self.norm1 = nn.LayerNorm(config.hidden)
        self.qkv = nn.Linear(config.hidden, 3 * config.hidden)
        self.proj = nn.Linear(config.hidden, config.hidden)
        self.norm2 = nn.LayerNorm(config.hidden)
        self.ff = nn.Sequential(nn.Linear(config.hidden, 4 * config.hidden), nn.GELU(),
                                nn.Linear(4 * config.hidden, config.hidden))
        self.dropout = nn.Dropout(config.dropout)  # on the residual branches; none on the (B, heads, T, T)
        # attention weights: drawing that mask was a fifth of a CPU training step

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, T, H / heads)
        x = x + self.dropout(self.proj(y.transpose(1, 2).reshape(b, t, h)))  # (B, T, H)
        return x + self.dropout(self.ff(self.norm2(x)))


class AttentionKT(nn.Module):
    """Causal self-attention with per-head forgetting over (skill, correct) tokens (see the module docstring)."""

    recurrent = False  # no state to continue from: serving recomputes from the answers sent

    def __init__(self, config: AttentionConfig):
        super().__init__()
        if config.hidden % config.heads:
            raise ValueError(f"hidden ({config.hidden}) must be a multiple of heads ({config.heads})")
        self.config = config
        self.embedding = nn.Embedding(2 * config.num_skills, config.hidden)
        self.blocks = nn.ModuleList(AttentionBlock(config) for _ in range(config.layers))
        # per head, per layer: penalty = softplus(decay) * distance; initial slopes from 1/2 to 1/2^heads (ALiBi)
        slopes = 2.0 ** -torch.arange(1, config.heads + 1, dtype=torch.float32)
        self.decay = nn.Parameter(torch.log(torch.expm1(slopes)).repeat(config.layers, 1))  # (L, heads)
        self.norm = nn.LayerNorm(config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.num_skills)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, H): the state after each token, from that token and the ones before it."""
        t = tokens.shape[1]
        at = torch.arange(t, device=tokens.device)
        distance = (at[:, None] - at[None, :]).to(torch.float32)  # (T, T) query i, key j: i - j
        future = torch.full((t, t), float("-inf"), device=tokens.device).triu(1)
        x = self.dropout(self.embedding(tokens))  # (B, T, H)
        for block, decay in zip(self.blocks, self.decay):
            bias = future - F.softplus(decay)[:, None, None] * distance.clamp(min=0)  # (heads, T, T)
            x = block(x, bias)
        return self.norm(x)

    def forward(
        self, tokens: torch.Tensor, targets: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As ``DKT.forward``: probabilities (B, T, S) on every skill after each step and the masked next-step loss."""
        logits = self.head(self.dropout(self.hidden_states(tokens)))  # (B, T, S)
        return torch.sigmoid(logits), next_step_loss(logits, targets, mask)

    def step_state(
        self, tokens: torch.Tensor, state: None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        """As ``DKT.step_state`` without a state: probabilities (B, S) after each row's last real token.

        Padding sits after a row's last real token, so the causal mask keeps it out. A row of length 0 gets
        the output after a zero token: ``kt.inference`` answers such rows with the prior instead.
        """
        if state is not None:
            raise ValueError("AttentionKT has no recurrent state to continue from")
        b, t = tokens.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        h = self.hidden_states(tokens)  # (B, T, H)
        last = h[torch.arange(b), (lengths.to(tokens.device) - 1).clamp(min=0)]  # (B, H)
        return torch.sigmoid(self.head(last)), None


# an ensemble's models by name: "attn" an AttentionKT, the others a DKT with these DKTConfig fields
ENSEMBLE_MEMBERS = {"dkt": {}, "dkt_counts": {"count_features": True}, "attn": None, "gru": {"cell": "gru"}}


@dataclass
class EnsembleConfig:
    num_skills: int
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    max_seq_len: int = 200
    dropout: float = 0.2
    members: tuple[str, ...] = ("dkt", "attn")  # one model each, in this order; names may repeat

    def __post_init__(self):
        self.members = tuple(self.members)  # model.json gives a list
        unknown = sorted(set(self.members) - set(ENSEMBLE_MEMBERS))
        if not self.members or unknown:
            raise ValueError(f"ensemble members: expected names among {', '.join(ENSEMBLE_MEMBERS)}, "
                             f"got {','.join(self.members) or 'none'}")

    def to_dict(self) -> dict:
        return {**asdict(self), "members": list(self.members)}


class EnsembleKT(nn.Module):
    """Models of one size (``members``: DKTs, DKTs reading counts, AttentionKTs, GRU DKTs, in any mix) trained side by
    side on the same batches (the sum of their losses: each learns as it would alone), predicting the mean of
    their logits.

    Averaging models that err differently is the field's most reliable small gain: members of one kind
    differ by their initialisation and dropout draws (built one after the other from one seed), members of
    different kinds by design as well (on ASSIST2009's valid split, three DKTs gained 0.004 AUC over one,
    a DKT reading counts and an attention model more, and a GRU DKT more than another LSTM one;
    bench/quality.md). It serves as one model, without a state."""

    recurrent = False  # serving recomputes from the last max_seq_len answers

    def __init__(self, config: EnsembleConfig):
        super().__init__()
        self.config = config
        shared = {"num_skills": config.num_skills, "hidden": config.hidden, "layers": config.layers,
                  "max_seq_len": config.max_seq_len, "dropout": config.dropout}
        self.members = nn.ModuleList(
            AttentionKT(AttentionConfig(**shared, heads=config.heads)) if name == "attn"
            else DKT(DKTConfig(**shared, **ENSEMBLE_MEMBERS[name]))
            for name in config.members
        )

    def forward(
        self, tokens: torch.Tensor, targets: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As ``DKT.forward``: the members' mean logit as probabilities (B, T, S); the sum of their losses."""
        outputs = [member(tokens, targets, mask) for member in self.members]
        probs = _mean_logit([p for p, _ in outputs])
        return probs, None if targets is None else torch.stack([loss for _, loss in outputs]).sum()

    def step_state(
        self, tokens: torch.Tensor, state: None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        """As ``AttentionKT.step_state``: probabilities (B, S) after each row's last real token, no state."""
        if state is not None:
            raise ValueError("EnsembleKT has no recurrent state to continue from")
        return _mean_logit([member.step_state(tokens, None, lengths)[0] for member in self.members]), None


def _mean_logit(probs: list[torch.Tensor]) -> torch.Tensor:
    """The probability of the mean logit of several models' probabilities."""
    return torch.sigmoid(torch.stack([torch.logit(p, eps=1e-7) for p in probs]).mean(0))


MODELS = ("dkt", "attn", "ensemble")  # the values of the hyperparameter ``model``


def build_model(name: str, config: dict) -> DKT | AttentionKT | EnsembleKT:
    """The model named ``name`` (model.json's "model", default "dkt") from its config dict."""
    if name == "dkt":
        return DKT(DKTConfig(**config))
    if name == "attn":
        return AttentionKT(AttentionConfig(**config))
    if name == "ensemble":
        return EnsembleKT(EnsembleConfig(**config))
    raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
