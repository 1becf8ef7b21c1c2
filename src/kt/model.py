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
        self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Feed tokens and return (probabilities after the last one, the LSTM state) for stateful serving."""
        x = self.embedding(tokens)  # (B, T, H)
        h, new_state = self.lstm(x, state)
        return torch.sigmoid(self.head(h[:, -1])), new_state  # (B, S)
