"""The engine's structured outputs: one grammar matcher per constrained sequence, a token mask per step.

Three calls tie it to the step loop: `attach` when a request is added (compiles, or finds in the cache,
and gives each of its sequences a matcher), the sampler's logits hook (`__call__`: xgrammar fills the
constrained rows of a host bitmask while the forward pass still runs on the device, then the bitmask is
uploaded, ANDed with the text guards and applied to the whole batch's logits by xgrammar's kernel:
Triton on CUDA, C++ on CPU), and `advance` for each accepted token (which also says when the grammar has
ended the sequence). A batch without constrained sequences costs one dictionary check per step.

The mask covers each sequence's next token only: a step that samples several tokens of one sequence
(speculative decoding's verification) needs a mask per position (matcher fork or rollback), so until
that exists a constrained sequence should be kept out of such steps.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tokenmill.engine.sequence import Sequence
from tokenmill.structured_output.compiler import GrammarCompiler, import_xgrammar
from tokenmill.structured_output.params import StructuredOutputsParams

logger = logging.getLogger(__name__)


class StructuredOutputs:
    def __init__(self, compiler: GrammarCompiler) -> None:
        self.compiler = compiler
        self._matchers: dict[int, Any] = {}  # seq_id -> xgrammar.GrammarMatcher
        self._json: set[int] = set()  # seq_ids whose grammar is JSON
        self._after_lead: set[int] = set()  # seq_ids whose last token ended on a surrogate's lead byte
        self._bitmask: torch.Tensor | None = None
        self._batch_matcher: Any = None

    def compile(self, params: StructuredOutputsParams) -> Any:
        return self.compiler.compile(params)

    def attach(self, seqs: list[Sequence], params: StructuredOutputsParams) -> None:
        """Give each sequence its own matcher; raises GrammarError (a ValueError) for a bad constraint."""
        xgr = import_xgrammar()
        compiled = self.compile(params)
        for seq in seqs:
            self._matchers[seq.seq_id] = xgr.GrammarMatcher(
                compiled, terminate_without_stop_token=not self.compiler.stop_token_ids
            )
            if params.is_json:
                self._json.add(seq.seq_id)

    def release(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            self._matchers.pop(seq.seq_id, None)
            self._json.discard(seq.seq_id)
            self._after_lead.discard(seq.seq_id)

    def tracks(self, seq: Sequence) -> bool:
        return seq.seq_id in self._matchers

    def advance(self, seq: Sequence, token: int) -> bool:
        """Feed the sequence's accepted token to its matcher; True when the grammar ends the sequence
        (it terminated, or refused a token the mask should have excluded)."""
        matcher = self._matchers[seq.seq_id]
        guards = self.compiler.guards
        if guards is not None and guards.ends_on_lead[token]:
            self._after_lead.add(seq.seq_id)
        else:
            self._after_lead.discard(seq.seq_id)
        if not matcher.accept_token(token):
            logger.warning("request %s: grammar refused token %d; ending the sequence", seq.request_id, token)
            return True
        return matcher.is_terminated()

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Mask, in place, the logits rows of constrained sequences to the tokens their grammar allows."""
        if not self._matchers:
            return logits
        rows = [row for row, seq in enumerate(seqs) if seq.seq_id in self._matchers]
        if not rows:
            return logits
        ids = [seqs[row].seq_id for row in rows]
        bitmask = self._host_bitmask(len(seqs), logits.shape[-1])
        self._filler().batch_fill_next_token_bitmask([self._matchers[i] for i in ids], bitmask, rows)
        on_device = bitmask[: len(seqs)].to(logits.device, non_blocking=True)
        guards = self.compiler.guards
        if guards is not None:
            is_json, after_lead = [i in self._json for i in ids], [i in self._after_lead for i in ids]
            guards.apply(on_device, rows, is_json, after_lead)
        import_xgrammar().apply_token_bitmask_inplace(
            logits, on_device, vocab_size=logits.shape[-1], indices=rows
        )
        return logits

    def _host_bitmask(self, num_rows: int, vocab_size: int) -> torch.Tensor:
        """The host buffer the matchers fill, one row per logits row (only constrained rows are read)."""
        words = -(-vocab_size // 32)
        bitmask = self._bitmask
        if bitmask is None or bitmask.shape[0] < num_rows or bitmask.shape[1] != words:
            capacity = max(num_rows, 2 * (0 if bitmask is None else bitmask.shape[0]))
            bitmask = self._bitmask = torch.empty(capacity, words, dtype=torch.int32)
        return bitmask

    def _filler(self) -> Any:
        if self._batch_matcher is None:
            self._batch_matcher = import_xgrammar().BatchGrammarMatcher()
        return self._batch_matcher
