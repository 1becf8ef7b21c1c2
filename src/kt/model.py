"""Deep Knowledge Tracing (Piech et al. 2015), as in the seed (DESIGN §5).

Token ``skill_index*2 + correct`` -> Embedding -> 2-layer LSTM -> Linear to
num_skills -> sigmoid: row t holds P(correct) on every skill at step t+1.
The loss is BCE of the prediction for the NEXT interaction's skill against
its correctness, over unpadded positions only.
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

    def to_dict(self) -> dict:
        return asdict(self)


def encode(skill_index: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """The one token encoder, shared by training and inference."""
    return skill_index * 2 + correct


class DKT(nn.Module):
    def __init__(self, config: DKTConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(2 * config.num_skills, config.hidden)
        self.lstm = nn.LSTM(
            config.hidden, config.hidden, num_layers=config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.num_skills)

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Probabilities for every skill after each step, and the masked next-step loss.

        tokens (B, T) long; targets (B, T, 2) long = next skill index and correctness
        aligned with tokens (target t is the answer after token t); mask (B, T) bool.
        """
        x = self.embedding(tokens)  # (B, T, H)
        h, _ = self.lstm(x, state)  # (B, T, H)
        logits = self.head(self.dropout(h))  # (B, T, S)
        probs = torch.sigmoid(logits)
        loss = None
        if targets is not None:
            picked = logits.gather(-1, targets[..., 0:1]).squeeze(-1)  # (B, T)
            if mask is None:
                mask = torch.ones_like(picked, dtype=torch.bool)
            loss = F.binary_cross_entropy_with_logits(picked[mask], targets[..., 1][mask].float())
        return probs, loss

    def step_state(
        self,
        tokens: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Probabilities after each row's last real token and the LSTM state there (serving, stateful or not).

        tokens (B, T) long, padded at the end; lengths (B,) real tokens per row (default T; 0 keeps the
        given state); state (h, c), each (layers, B, H), to continue from (default zeros).
        """
        b, t = tokens.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        if state is None:
            zeros = torch.zeros(self.config.layers, b, self.config.hidden, device=tokens.device)
            state = (zeros, zeros.clone())
        fed = lengths > 0
        h, c = state
        if bool(fed.any()):
            x = self.embedding(tokens[fed])  # (b', T, H)
            if bool((lengths[fed] != t).any()):  # packed: the state stops at each row's own last token
                x = pack_padded_sequence(x, lengths[fed].cpu(), batch_first=True, enforce_sorted=False)
            _, (h_fed, c_fed) = self.lstm(x, (h[:, fed].contiguous(), c[:, fed].contiguous()))  # (L, b', H)
            if bool(fed.all()):
                h, c = h_fed, c_fed
            else:
                h, c = h.clone(), c.clone()
                h[:, fed], c[:, fed] = h_fed, c_fed
        return torch.sigmoid(self.head(h[-1])), (h, c)  # (B, S); the top layer's h is its last output
