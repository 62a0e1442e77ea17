"""Vocabulary-parallel embedding and LM head: each rank holds a contiguous run of the vocabulary's rows.

The vocabulary is padded to a multiple of the ranks (the padding rows are zero and never looked up);
the embedding sums the ranks' partial lookups (each rank fills only its own ids), and the LM head
gathers the ranks' logit columns on rank 0, the one that samples, trimmed back to the vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.distributed.group import TensorParallel
from tokenmill.distributed.sharding import CheckpointTensor, float_part
from tokenmill.models.config import ModelConfig


class _VocabRows(nn.Module):
    """The weight of this rank's vocabulary rows [rows_per_rank, hidden]."""

    def __init__(self, vocab_size: int, hidden_size: int, tp: TensorParallel) -> None:
        super().__init__()
        self.vocab_size, self.hidden_size, self.tp = vocab_size, hidden_size, tp
        self.rows_per_rank = -(-vocab_size // tp.size)
        self.start = tp.rank * self.rows_per_rank
        self.stop = min(self.start + self.rows_per_rank, vocab_size)
        self.weight = nn.Parameter(torch.empty(self.rows_per_rank, hidden_size))

    def checkpoint_shape(self) -> tuple[int, int]:
        return self.vocab_size, self.hidden_size

    def checkpoint_part(self, tensor: CheckpointTensor) -> torch.Tensor:
        """This rank's rows of the [vocab, hidden] checkpoint tensor, zero-padded to `rows_per_rank`."""
        part = float_part(tensor[self.start : self.stop], "the embedding or LM head")
        return F.pad(part, (0, 0, 0, self.rows_per_rank - len(part)))

    def extra_repr(self) -> str:
        return f"vocab rows {self.start}:{self.stop} of {self.vocab_size}, hidden={self.hidden_size}"


class VocabParallelEmbedding(_VocabRows):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        local = input_ids - self.start
        mine = (local >= 0) & (local < self.stop - self.start)
        hidden = F.embedding(torch.where(mine, local, 0), self.weight)
        return self.tp.all_reduce(hidden * mine.unsqueeze(-1).to(hidden.dtype))


class ParallelLMHead(_VocabRows):
    def forward(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Full logits [tokens, vocab] on rank 0; None on the other ranks."""
        logits = self.tp.gather_last_dim(F.linear(hidden, self.weight))
        return None if logits is None else logits[..., : self.vocab_size]


def embedding(config: ModelConfig) -> nn.Module:
    """The token embedding: a plain one on a single rank, a vocabulary-parallel one otherwise."""
    tp = config.tensor_parallel
    if tp.size == 1:
        return nn.Embedding(config.vocab_size, config.hidden_size)
    return VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp)


def lm_head(config: ModelConfig) -> nn.Module:
    tp = config.tensor_parallel
    if tp.size == 1:
        return nn.Linear(config.hidden_size, config.vocab_size, bias=False)
    return ParallelLMHead(config.vocab_size, config.hidden_size, tp)
