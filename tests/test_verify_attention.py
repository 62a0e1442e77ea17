"""Verify-step attention (speculative decoding: each sequence brings its last token and a few proposals)
runs the decode kernel token by token: every row equals, bit for bit, the decode of that token at its own
context with the same split count, whatever the width of its chunk and the other sequences of the step;
and it matches the reference within rounding, over quantized caches too. A step with a long prefill chunk,
or with prompt chunks and nothing to verify, still sends its chunks to the prefill kernel."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.test_kernels import DEVICE, DTYPES, TRITON, _paged_setup, close
from tokenmill.kernels import reference
from tokenmill.kernels.metadata import MAX_VERIFY_WIDTH, AttentionMetadata
from tokenmill.kernels.triton import attention, paged
from tokenmill.kernels.triton.attention import decode_attention


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def _verify_step(widths: list[int], dtype: torch.dtype, splits: int, contexts=(70, 131, 9, 200)):
    """Sequences whose chunks (the last `widths[i]` tokens of contexts[i]) cross 8-token blocks and, with
    contexts 64..200 and several splits, the 64-token tiles where split boundaries fall."""
    q, cache, meta = _paged_setup(list(contexts), widths, page=8, kv_heads=2, group=2, dtype=dtype)
    meta.decode_splits, meta.verifies = splits, True
    return q, cache, meta


def _as_decodes(q, cache, meta: AttentionMetadata, scale: float, kv_scales=None) -> torch.Tensor:
    """Every token decoded on its own: one batch row per token, at the context that token's decode has,
    with its sequence's block table."""
    lens = meta.query_lens_cpu
    seq_of_token = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
    contexts = [n - w + 1 + t for n, w in zip(meta.seq_lens_cpu, lens) for t in range(w)]
    return decode_attention(
        q, cache, meta.block_tables[seq_of_token], torch.tensor(contexts, dtype=torch.int32), scale,
        meta.decode_splits, kv_scales,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("widths", "splits", "dtype"),
    [
        pytest.param(  # decodes and verify chunks of several widths in one step (2-3 s interpreted)
            [1, 1, 5, 3], 2, torch.float16, marks=pytest.mark.slow
        ),
        *(
            pytest.param(widths, splits, dtype, marks=pytest.mark.slow)  # 1 to 10 s each, interpreted
            for widths, splits in [([2, 2, 2, 2], 1), ([5, 5, 5, 5], 2), ([8, 8, 8, 8], 4), ([1, 1, 5, 3], 2)]
            for dtype in DTYPES  # bf16 on a GPU only: the interpreter cannot dot it
            if (widths[0], dtype) != (1, torch.float16)
        ),
    ],
    ids=str,
)
def test_verify_rows_equal_their_decodes_bit_for_bit(dtype, widths: list[int], splits: int) -> None:
    q, cache, meta = _verify_step(widths, dtype, splits)
    got = TRITON.paged_attention(q, cache, meta, 0.3)
    assert torch.equal(got, _as_decodes(q, cache, meta, 0.3))
    close(got.float(), reference.paged_attention(q, cache, meta, 0.3).float(), dtype)


@pytest.mark.slow
def test_a_row_does_not_depend_on_its_chunk() -> None:
    """The last two tokens of each sequence, verified in chunks of 7 and then of 2, round identically."""
    q, cache, wide = _verify_step([7, 7, 7, 7], torch.float16, 2)
    last_two = torch.tensor([i * 7 + t for i in range(4) for t in (5, 6)])
    narrow = replace(
        wide,
        query_start_loc=torch.arange(0, 9, 2, dtype=torch.int32),
        query_lens_cpu=[2] * 4,
        max_query_len=2,
    )
    wide_out = TRITON.paged_attention(q, cache, wide, 0.3)
    assert torch.equal(TRITON.paged_attention(q[last_two], cache, narrow, 0.3), wide_out[last_two])


@pytest.mark.slow  # 2-3 s each interpreted
@pytest.mark.parametrize("kind", ["fp8", "int8"])
def test_verify_rows_over_quantized_caches(kind: str) -> None:
    q, cache, meta = _verify_step([1, 2, 3, 4], torch.float16, 2)
    if kind == "fp8":
        cache, scales = cache.to(torch.float8_e4m3fn), torch.tensor([0.5, 2.0])
    else:
        values, scales = reference.quantize_int8_heads(cache.flatten(0, 2))
        cache, scales = values.view(cache.shape), scales.view(cache.shape[:-1])
    got = TRITON.paged_attention(q, cache, meta, 0.25, scales)
    assert torch.equal(got, _as_decodes(q, cache, meta, 0.25, scales))
    close(got, reference.paged_attention(q, cache, meta, 0.25, scales), torch.float16)


@pytest.mark.parametrize("verifies", [True, False], ids=["long chunk", "short prompt chunk, no proposals"])
def test_prefill_chunks_go_to_the_prefill_kernel(verifies: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk longer than a verify chunk, or any chunk of a step that verifies nothing (a short prompt
    chunk reads its context once per tile of queries there, not once per token)."""
    widths = [1, 3, MAX_VERIFY_WIDTH + 1 if verifies else 5, 2]
    q, cache, meta = _verify_step(widths, torch.float32, 2, contexts=(40, 9, 60, 20))
    meta.verifies = verifies
    chunks: list[int] = []

    def prefill(*args, first_seq: int, **kwargs):
        chunks.append(len(widths) - first_seq)
        return attention.prefill_attention(*args, first_seq=first_seq, **kwargs)

    monkeypatch.setattr(paged, "prefill_attention", prefill)
    got = TRITON.paged_attention(q, cache, meta, 0.3)
    assert chunks == [3]  # the three sequences after the one decode
    close(got, reference.paged_attention(q, cache, meta, 0.3), q.dtype)
