"""The grammar token mask: the Triton kernel equals the PyTorch reference (through Triton's interpreter on
CI), the reference equals xgrammar's own apply, and a step's mask work covers constrained rows only."""

from __future__ import annotations

import os

import pytest
import torch

from tokenmill.engine.sequence import Sequence, SequenceStatus
from tokenmill.sampling_params import SamplingParams
from tokenmill.structured_output import StructuredOutputsParams
from tokenmill.structured_output.compiler import GrammarCompiler
from tokenmill.structured_output.manager import StructuredOutputs, default_fill_threads
from tokenmill.structured_output.token_mask import StepMask, apply_token_mask_reference, token_mask_op
from tokenmill.tokenizer import Tokenizer

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")


def random_case(vocab: int, grammar_vocab: int, seed: int) -> tuple[torch.Tensor, StepMask, torch.Tensor]:
    """Logits of 7 rows; masks for rows 5, 0, 3, 6 over `grammar_vocab` tokens, random guard rows."""
    generator = torch.Generator().manual_seed(seed)
    words = -(-grammar_vocab // 32)
    logits = torch.randn(7, vocab, generator=generator)
    bitmask = torch.randint(-(2**31), 2**31 - 1, (4, words), dtype=torch.int32, generator=generator)
    guards = torch.randint(-(2**31), 2**31 - 1, (4, words), dtype=torch.int32, generator=generator)
    placement = torch.tensor([[5, 0, 3, 6], [2, 0, 3, 1]], dtype=torch.int32)
    return logits, StepMask(bitmask, placement), guards


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("vocab", "grammar_vocab"), [(300, 300), (4100, 259), (2048, 2048)])
def test_triton_mask_equals_the_reference(dtype: torch.dtype, vocab: int, grammar_vocab: int) -> None:
    logits, mask, guards = random_case(vocab, grammar_vocab, seed=vocab)
    logits, mask, guards = logits.to(DEVICE, dtype), mask.to(DEVICE), guards.to(DEVICE)
    expected, got = logits.clone(), logits.clone()
    apply_token_mask_reference(expected, mask, guards, grammar_vocab)
    token_mask_op("triton")(got, mask, guards, grammar_vocab)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert torch.equal(got[[1, 2, 4]], logits[[1, 2, 4]])  # plain rows untouched
    assert torch.isinf(got[5, grammar_vocab:]).all()  # padding ids never survive
    assert not torch.isinf(got[5, :grammar_vocab]).all()


def test_reference_mask_equals_xgrammars_apply() -> None:
    """With guards that allow everything and no padding, the mask is xgrammar's bitmask apply."""
    import xgrammar

    logits, mask, _ = random_case(300, 300, seed=1)
    everything = torch.full((4, mask.bitmask.shape[1]), -1, dtype=torch.int32)
    ours = logits.clone()
    apply_token_mask_reference(ours, mask, everything, 300)
    targets = mask.placement[0]
    by_row = torch.full((7, mask.bitmask.shape[1]), -1, dtype=torch.int32)
    by_row[targets.long()] = mask.bitmask
    theirs = logits.clone()
    xgrammar.apply_token_bitmask_inplace(theirs, by_row, vocab_size=300, indices=targets.tolist())
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, logits)


class SpyMask:
    """A mask op that records how many rows each call masks, then runs the reference."""

    def __init__(self) -> None:
        self.rows: list[list[int]] = []

    def __call__(
        self, logits: torch.Tensor, mask: StepMask, guards: torch.Tensor, grammar_vocab: int
    ) -> None:
        self.rows.append(mask.placement[0].tolist())
        apply_token_mask_reference(logits, mask, guards, grammar_vocab)


def test_a_step_masks_only_its_unfinished_constrained_rows() -> None:
    """One grammar sequence among plain ones: the mask covers its row alone, allows exactly what its
    matcher allows, and leaves every plain row as it was; a finished constrained row is skipped."""
    import xgrammar

    tokenizer = Tokenizer.byte_level()
    spy = SpyMask()
    structured = StructuredOutputs(GrammarCompiler(tokenizer, 320, (tokenizer.eos_token_id,)), 2, spy)
    constraint = StructuredOutputsParams(regex="(ab|cd)[0-9]")
    params = SamplingParams(structured_outputs=constraint)
    cpu = torch.device("cpu")
    seqs = [Sequence("r", i, [1], SamplingParams() if i != 3 else params, cpu) for i in range(8)]
    structured.attach([seqs[3]], constraint)
    logits = torch.randn(8, 320)
    masked = structured(logits.clone(), seqs)
    assert spy.rows == [[3]]
    assert torch.equal(masked[[0, 1, 2, 4, 5, 6, 7]], logits[[0, 1, 2, 4, 5, 6, 7]])
    allowed = set(torch.isfinite(masked[3]).nonzero().flatten().tolist())
    matcher = xgrammar.GrammarMatcher(structured.compile(constraint))
    own = xgrammar.allocate_token_bitmask(1, structured.compiler.grammar_vocab_size)
    matcher.fill_next_token_bitmask(own)
    expected = {t for t in range(structured.compiler.grammar_vocab_size) if own[0, t // 32] >> (t % 32) & 1}
    assert allowed == expected == {tokenizer.encode(c, add_special_tokens=False)[0] for c in "ac"}
    seqs[3].status = SequenceStatus.FINISHED
    assert torch.equal(structured(logits.clone(), seqs), logits)
    assert spy.rows == [[3]]


def test_fill_threads_default_to_the_usable_cores_at_most_eight() -> None:
    compiler = GrammarCompiler(Tokenizer.byte_level(), 320, (256,))
    assert StructuredOutputs(compiler).fill_threads == default_fill_threads()
    assert 1 <= default_fill_threads() <= min(8, os.cpu_count() or 1)
    assert StructuredOutputs(compiler, 3).fill_threads == 3
