"""The engine's structured outputs: one grammar matcher per constrained sequence, a token mask per step.

Three calls tie it to the step loop: `attach` when a request is added (compiles, or finds in the cache,
and gives each of its sequences a matcher), the sampler's logits hook (`__call__`), and `accept` for
each sampled token before it is appended (then `is_terminated` says when the grammar has ended the
sequence).

The hook runs after the step's forward pass is queued, so the host's work overlaps it: xgrammar fills a
bitmask row over the grammar's vocabulary for each constrained sequence (not each batch row) into a
pinned host buffer, on `fill_threads` threads when the rows are many, the rows go up with one
asynchronous copy, and one kernel applies them with the text guards (token_mask.py). With async
scheduling the engine runs this hook only once the previous step's tokens have advanced the matchers
(llm_engine.py), so grammar batches keep launching ahead. A batch without constrained sequences costs
one dictionary check per step; a mixed batch pays for its constrained rows only.

The mask covers each sequence's next token only: a step that samples several tokens of one sequence
(speculative decoding's verification) needs a mask per position (matcher fork or rollback), so until
that exists a constrained sequence is kept out of such steps (the speculator proposes nothing for it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tokenmill.engine.host_staging import HostStaging
from tokenmill.engine.sequence import Sequence
from tokenmill.structured_output.compiler import GrammarCompiler, import_xgrammar
from tokenmill.structured_output.params import StructuredOutputsParams
from tokenmill.structured_output.text_guards import TextGuards, guard_row
from tokenmill.structured_output.token_mask import StepMask, TokenMaskOp, apply_token_mask_reference

logger = logging.getLogger(__name__)
CPU = torch.device("cpu")
# A step's bitmask of fewer words fills on one thread: filling is mostly copying a cached row per matcher
# state (about 0.1 ms for 358 rows of a 49k vocabulary, 1,536 words each), and waking threads costs more.
PARALLEL_FILL_WORDS = 1 << 20


def default_fill_threads() -> int:
    """Threads for the bitmask fill when the configuration names none: the usable cores, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


@dataclass(slots=True)
class _Constrained:
    """A constrained sequence's grammar state: its matcher and which guard row its next token needs
    (text_guards.guard_row: JSON or not, and whether its last token ended on a surrogate's lead byte)."""

    matcher: Any  # xgrammar.GrammarMatcher
    is_json: bool
    guard: int


class StructuredOutputs:
    def __init__(
        self,
        compiler: GrammarCompiler,
        fill_threads: int | None = None,
        mask_op: TokenMaskOp = apply_token_mask_reference,
        device: torch.device = CPU,
    ) -> None:
        self.compiler = compiler
        self.fill_threads = fill_threads or default_fill_threads()
        self.mask_op = mask_op
        self._constrained: dict[int, _Constrained] = {}  # by seq_id
        # Pinned on CUDA, two sets used by alternate steps: a set is refilled only once the device has
        # read it.
        self._staging = HostStaging(device)
        self._fillers: dict[int, Any] = {}  # xgrammar.BatchGrammarMatcher by thread count

    def compile(self, params: StructuredOutputsParams) -> Any:
        return self.compiler.compile(params)

    def attach(self, seqs: list[Sequence], params: StructuredOutputsParams) -> None:
        """Give each sequence its own matcher; raises GrammarError (a ValueError) for a bad constraint."""
        compiled = self.compile(params)
        for seq in seqs:
            guard = guard_row(params.is_json, after_lead=False)
            self._constrained[seq.seq_id] = _Constrained(
                self.compiler.new_matcher(compiled), params.is_json, guard
            )

    def release(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            self._constrained.pop(seq.seq_id, None)

    def tracks(self, seq: Sequence) -> bool:
        return seq.seq_id in self._constrained

    def constrains(self, seqs: list[Sequence]) -> bool:
        """Whether any of `seqs` samples under a grammar (its step's sampling then needs their matchers
        advanced by every token sampled before it)."""
        constrained = self._constrained
        return bool(constrained) and any(seq.seq_id in constrained for seq in seqs)

    def accept(self, seq: Sequence, token: int) -> bool:
        """Feed the sequence's sampled token to its matcher; False when the grammar refuses it, which
        the mask leaves possible only when it allowed no token at all (the grammar has no way on).

        One call per token: xgrammar 0.2.8's `BatchGrammarMatcher.batch_accept_token` is a static loop
        on one thread and measured slower for a whole step (CPU, 358 rows of the benchmark's schema:
        0.92-1.16 ms against 0.82-1.01), and `accept_token` holds the GIL, so threads do not help."""
        state = self._constrained[seq.seq_id]
        ends_on_lead = self._guards.ends_on_lead
        state.guard = guard_row(state.is_json, token < len(ends_on_lead) and bool(ends_on_lead[token]))
        if state.matcher.accept_token(token):
            return True
        logger.warning(
            "request %s: its grammar allows no next token (%d output tokens); ending the sequence "
            "(finish_reason abort)",
            seq.request_id,
            seq.num_output_tokens,
        )
        return False

    def is_terminated(self, seq: Sequence) -> bool:
        """Whether the sequence's grammar is complete and allows nothing more."""
        return self._constrained[seq.seq_id].matcher.is_terminated()

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Mask, in place, the logits rows of constrained sequences to the tokens their grammar allows."""
        if self._constrained:
            mask = self.fill(seqs)
            if mask is not None:
                self.apply(logits, mask.to(logits.device))
        return logits

    def fill(self, seqs: list[Sequence]) -> StepMask | None:
        """The host's part of a step's mask: a bitmask row for each constrained sequence still running
        (one whose token of a step launched ahead will be dropped is left out), or None if there is none."""
        constrained = self._constrained
        rows = [row for row, seq in enumerate(seqs) if seq.seq_id in constrained and not seq.is_finished]
        if not rows:
            return None
        states = [constrained[seqs[row].seq_id] for row in rows]
        words = self._guards.rows.shape[1]
        staging = self._staging
        staging.next_step()
        bitmask = staging.tensor("bitmask", len(rows) * words, torch.int32).view(len(rows), words)
        filler = self._filler(len(rows) * words)
        filler.batch_fill_next_token_bitmask([state.matcher for state in states], bitmask)
        placement = staging.fill("rows", np.array([rows, [state.guard for state in states]]), torch.int32)
        return StepMask(bitmask, placement)

    def apply(self, logits: torch.Tensor, mask: StepMask) -> None:
        """The device's part: one kernel masks the constrained rows of `logits` (`mask` on its device)."""
        guard_rows = self._guards.rows_on(logits.device)
        self.mask_op(logits, mask, guard_rows, self.compiler.grammar_vocab_size)

    @property
    def _guards(self) -> TextGuards:
        guards = self.compiler.guards
        assert guards is not None, "attach built the compiler, and with it the guards"
        return guards

    def _filler(self, num_words: int) -> Any:
        """xgrammar's batch filler: on `fill_threads` threads for PARALLEL_FILL_WORDS words or more."""
        threads = self.fill_threads if num_words >= PARALLEL_FILL_WORDS else 1
        filler = self._fillers.get(threads)
        if filler is None:
            filler = self._fillers[threads] = import_xgrammar().BatchGrammarMatcher(threads)
        return filler
