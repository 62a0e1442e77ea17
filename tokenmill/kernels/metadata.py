"""What a step's attention needs to know about its batch: the contract between the runner and every
kernel backend.

A step's batch is flattened: the new tokens of all sequences are concatenated, decodes first (one token
each), then prefill chunks. Each sequence's keys live in fixed-size blocks named by its block-table row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Speculative decoding's verify chunks (the last known token and up to 16 proposals) are at most this long.
MAX_VERIFY_WIDTH = 17


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] cache slot (block * block_size + offset) of each new token
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32, padded with 0
    seq_lens: torch.Tensor  # [num_seqs] context length after this step
    query_start_loc: torch.Tensor  # [num_seqs + 1] offsets of each sequence's tokens in the batch
    num_decodes: int  # the first `num_decodes` sequences contribute exactly one token
    seq_lens_cpu: list[int]
    query_lens_cpu: list[int]
    block_size: int
    max_query_len: int = 1
    decode_splits: int = 1  # programs per decoding token and KV head in a split decode (`Ops.decode_splits`)
    verifies: bool = False  # the step verifies speculative proposals

    @property
    def attends_as_decodes(self) -> bool:
        """Whether every token of the step attends as its own decode step would: a step of decodes, or
        one that verifies proposals and has no chunk longer than a verify chunk, so that a verified
        token's rounding does not depend on the rest of its chunk. Other steps run their chunks through
        the prefill kernel (a short prompt chunk there reads its context once per tile of queries, not
        once per token)."""
        return self.max_query_len == 1 or (self.verifies and self.max_query_len <= MAX_VERIFY_WIDTH)
