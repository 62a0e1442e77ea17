"""The multi-query attention kernel (every sequence brings the same few query tokens: speculative
decoding's verify steps) equals the reference, split or not, with quantized caches, for every GQA group
and width; the Triton backend routes exactly the uniform short chunks to it; warm-up compiles it."""

from __future__ import annotations

import pytest
import torch

from tests.test_kernels import DEVICE, DTYPES, TRITON, _cache, _paged_setup, close
from tokenmill.kernels import reference
from tokenmill.kernels.triton import multi_query
from tokenmill.kernels.triton.multi_query import MAX_WIDTH, multi_query_attention


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def _uniform_setup(width: int, group: int, dtype: torch.dtype, page: int = 8):
    """Contexts from just the chunk itself (5 tokens at width 5) to several tiles, `width` new tokens each."""
    seq_lens = [width, 70, 130, 33]
    q, cache, meta = _paged_setup(seq_lens, [width] * 4, page=page, kv_heads=2, group=group, dtype=dtype)
    meta.num_decodes = 0
    return q, cache, meta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("width", "group", "splits"),
    [(2, 1, 1), (5, 2, 4), *(pytest.param(*case, marks=pytest.mark.slow) for case in [(3, 3, 2), (9, 2, 8)])],
)
def test_multi_query_attention(dtype: torch.dtype, width: int, group: int, splits: int) -> None:
    """With 8 splits, the shortest contexts leave most splits empty; only split 0 sees the chunk's keys."""
    q, cache, meta = _uniform_setup(width, group, dtype)
    expected = reference.paged_attention(q, cache, meta, 0.3)
    got = multi_query_attention(q, cache, meta.block_tables, meta.seq_lens, width, 0.3, splits)
    close(got, expected, dtype)


@pytest.mark.parametrize("kind", ["fp8", pytest.param("int8", marks=pytest.mark.slow)])
def test_multi_query_attention_over_quantized_caches(kind: str) -> None:
    q, cache, meta = _uniform_setup(4, 2, torch.float16)
    if kind == "fp8":
        cache, scales = cache.to(torch.float8_e4m3fn), torch.tensor([0.5, 2.0])
    else:
        values, scales = reference.quantize_int8_heads(cache.flatten(0, 2))
        cache, scales = values.view(cache.shape), scales.view(cache.shape[:-1])
    expected = reference.paged_attention(q, cache, meta, 0.25, scales)
    got = multi_query_attention(q, cache, meta.block_tables, meta.seq_lens, 4, 0.25, 2, scales)
    close(got, expected, torch.float16)


def test_the_backend_routes_uniform_short_chunks_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    kernel = multi_query.multi_query_attention

    def spy(*args, **kwargs):
        calls.append(args[4])  # width
        return kernel(*args, **kwargs)

    monkeypatch.setattr(multi_query, "multi_query_attention", spy)
    q, cache, meta = _uniform_setup(3, 2, torch.float32)
    meta.decode_splits = 2
    close(
        TRITON.paged_attention(q, cache, meta, 0.3), reference.paged_attention(q, cache, meta, 0.3), q.dtype
    )
    assert calls == [3]
    seq_lens, query_lens = [40, 9, 20], [3, 3, 2]  # not uniform: the chunk path
    q, cache, meta = _paged_setup(seq_lens, query_lens, page=8, kv_heads=2, group=2, dtype=torch.float32)
    meta.num_decodes = 0
    close(
        TRITON.paged_attention(q, cache, meta, 0.3), reference.paged_attention(q, cache, meta, 0.3), q.dtype
    )
    long = MAX_WIDTH + 1  # uniform but long: the chunk path
    q, cache, meta = _paged_setup([long, 40], [long] * 2, page=8, kv_heads=2, group=2, dtype=torch.float32)
    meta.num_decodes = 0
    close(
        TRITON.paged_attention(q, cache, meta, 0.3), reference.paged_attention(q, cache, meta, 0.3), q.dtype
    )
    assert calls == [3]


@pytest.mark.slow
def test_warm_up_compiles_every_row_block_over_the_null_block(monkeypatch: pytest.MonkeyPatch) -> None:
    widths = []
    kernel = multi_query.multi_query_attention
    monkeypatch.setattr(
        multi_query, "multi_query_attention", lambda *args: widths.append(args[4]) or kernel(*args)
    )
    cache = _cache(5, 4, 2, 32, torch.float32)
    before = cache.clone()
    TRITON.warm_up(cache, 4, torch.float32, 4, None)  # group 2: 16 and 32 rows
    assert torch.equal(cache, before)
    assert [max(16, 1 << (2 * w - 1).bit_length()) for w in widths] == [16, 32]
