"""Every Triton kernel equals its PyTorch reference, and `select_ops` picks the backend asked for.

On CI the kernels run through Triton's interpreter on the CPU (float32, float16; the interpreter's bf16
matmul and float->fp8 rounding are broken). On a GPU (`TRITON_INTERPRET=0 pytest tests/test_kernels.py`)
the same tests run compiled, in bfloat16 too, and the fp8 cache write is checked as well.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from tokenmill import LLM, SamplingParams
from tokenmill.kernels import reference
from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.ops import TORCH_OPS, select_ops, triton_ops
from tokenmill.kernels.triton.attention import DecodeTiling, decode_attention, prefill_attention

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
DTYPES = [torch.float32, torch.float16, *([torch.bfloat16] if ON_GPU else [])]
TRITON = triton_ops(DEVICE)


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    tolerance = {torch.float32: 2e-5 if not ON_GPU else 2e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}[
        dtype
    ]
    torch.testing.assert_close(a.float(), b.float(), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm(dtype: torch.dtype, with_residual: bool) -> None:
    x, residual = torch.randn(7, 96, dtype=dtype), torch.randn(7, 96, dtype=dtype)
    weight = torch.rand(96, dtype=dtype) + 0.5
    expected, expected_residual = reference.rms_norm(
        x, weight, 1e-6, residual.clone() if with_residual else None
    )
    got, got_residual = TRITON.rms_norm(x.clone(), weight, 1e-6, residual.clone() if with_residual else None)
    close(got, expected, dtype)
    if with_residual:
        close(got_residual, expected_residual, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul(dtype: torch.dtype) -> None:
    gate_up = torch.randn(5, 2 * 1500, dtype=dtype)
    close(TRITON.silu_and_mul(gate_up), reference.silu_and_mul(gate_up), dtype)


def _cache(blocks: int, page: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(2, blocks, page, kv_heads, head_dim).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,qk_norm", [(4, 2, True), (9, 3, False), (8, 8, True)])
def test_norm_rope_and_cache(dtype: torch.dtype, heads: int, kv_heads: int, qk_norm: bool) -> None:
    tokens, head_dim, page = 6, 32, 4
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, dtype=dtype)
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q, k, v = (t.unflatten(-1, (-1, head_dim)) for t in (q, k, v))
    positions = torch.tensor([0, 5, 17, 3, 99, 100])
    angles = torch.arange(128.0)[:, None] * (1.0 / 10000 ** (torch.arange(0, head_dim, 2) / head_dim))[None]
    slots = torch.tensor([3, 9, 10, 0, 21, 14])
    norm = (
        (torch.rand(head_dim, dtype=dtype) + 0.5, torch.rand(head_dim, dtype=dtype) + 0.5, 1e-6)
        if qk_norm
        else None
    )
    expected_cache, got_cache = _cache(6, page, kv_heads, head_dim, dtype), None
    got_cache = expected_cache.clone()
    expected_q = reference.norm_rope_and_cache(
        q.clone(), k.clone(), v.clone(), positions, angles.cos(), angles.sin(), expected_cache, slots, norm
    )
    got_q = TRITON.norm_rope_and_cache(
        q.clone(), k, v, positions, angles.cos(), angles.sin(), got_cache, slots, norm
    )
    close(got_q, expected_q, dtype)
    close(got_cache, expected_cache, dtype)


def _paged_setup(seq_lens: list[int], query_lens: list[int], page: int, kv_heads: int, group: int, dtype):
    """A cache holding every sequence's context in shuffled blocks, and queries for the new tokens."""
    head_dim = 32
    blocks_per_seq = [-(-n // page) for n in seq_lens]
    order = list(range(1, sum(blocks_per_seq) + 1))
    random.Random(0).shuffle(order)
    tables, at = [], 0
    for count in blocks_per_seq:
        tables.append(order[at : at + count] + [0] * (max(blocks_per_seq) - count))
        at += count
    cache = _cache(sum(blocks_per_seq) + 1, page, kv_heads, head_dim, dtype)
    q = torch.randn(sum(query_lens), kv_heads * group, head_dim, dtype=dtype)
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    num_decodes = sum(1 for n in query_lens if n == 1)
    meta = AttentionMetadata(
        slot_mapping=torch.zeros(sum(query_lens), dtype=torch.long),
        block_tables=torch.tensor(tables, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        query_start_loc=torch.tensor(starts, dtype=torch.int32),
        num_decodes=num_decodes,
        seq_lens_cpu=seq_lens,
        query_lens_cpu=query_lens,
        block_size=page,
        max_query_len=max(query_lens),
    )
    return q, cache, meta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "group,splits",
    # the fast layer runs group 1 (the others take 0.2-0.7 s each); it splits decodes in the tests below
    [(1, 1), *(pytest.param(g, s, marks=pytest.mark.slow) for g, s in ((2, 1), (3, 4), (4, 2)))],
)
def test_decode_attention(dtype: torch.dtype, group: int, splits: int) -> None:
    seq_lens = [1, 7, 33, 130, 64]
    q, cache, meta = _paged_setup(seq_lens, [1] * len(seq_lens), page=8, kv_heads=2, group=group, dtype=dtype)
    expected = reference.paged_attention(q, cache, meta, 0.3)
    got = decode_attention(q, cache, meta.block_tables, meta.seq_lens, 0.3, splits)
    close(got, expected, dtype)


@pytest.mark.parametrize(
    "tiling", [DecodeTiling(16, 4, 1), pytest.param(DecodeTiling(32, 8, 3), marks=pytest.mark.slow)], ids=str
)
@pytest.mark.parametrize("splits", [pytest.param(1, marks=pytest.mark.slow), 2])  # 0.2-0.5 s each
def test_decode_attention_tilings_walk_long_contexts_tile_by_tile(tiling: DecodeTiling, splits: int) -> None:
    """Tiles narrower than the default take the loop many times per program, split or not."""
    seq_lens = [1, 17, 130, 64]
    q, cache, meta = _paged_setup(seq_lens, [1] * 4, page=8, kv_heads=2, group=3, dtype=torch.float32)
    expected = reference.paged_attention(q, cache, meta, 0.3)
    got = decode_attention(q, cache, meta.block_tables, meta.seq_lens, 0.3, splits, tiling=tiling)
    close(got, expected, torch.float32)


@pytest.mark.parametrize("dtype", [DTYPES[0], *(pytest.param(d, marks=pytest.mark.slow) for d in DTYPES[1:])])
def test_prefill_attention_with_cached_prefixes(dtype: torch.dtype) -> None:
    seq_lens, query_lens = [20, 70, 5, 90], [20, 30, 5, 1]  # no prefix, 40 cached, whole, decode-like
    q, cache, meta = _paged_setup(seq_lens, query_lens, page=16, kv_heads=2, group=2, dtype=dtype)
    meta.num_decodes = 0
    expected = reference.paged_attention(q, cache, meta, 0.2)
    got = prefill_attention(q, cache, meta.block_tables, meta.seq_lens, meta.query_start_loc, 30, 0.2)
    close(got, expected, dtype)


# fp8: 0.8 s interpreted; the fp8 cache test below takes the same dispatch
@pytest.mark.parametrize("fp8", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_mixed_batch_dispatch(fp8: bool) -> None:
    """Decodes first, then prefill chunks: the Triton backend's `paged_attention` equals the reference."""
    seq_lens, query_lens = [9, 40, 3, 50, 17], [1, 1, 1, 20, 17]
    q, cache, meta = _paged_setup(seq_lens, query_lens, page=4, kv_heads=2, group=2, dtype=torch.float16)
    scales = None
    if fp8:
        cache, scales = cache.to(torch.float8_e4m3fn), torch.tensor([0.5, 2.0])
    expected = reference.paged_attention(q, cache, meta, 0.25, scales)
    meta.decode_splits = 2
    close(TRITON.paged_attention(q, cache, meta, 0.25, scales), expected, torch.float16)


# the fast layer keeps float16; each dtype takes about 1 s interpreted
@pytest.mark.parametrize(
    "dtype", [d if d == torch.float16 else pytest.param(d, marks=pytest.mark.slow) for d in DTYPES]
)
def test_fp8_cache_attention_holds_each_query_dtype_to_its_tolerance(dtype: torch.dtype) -> None:
    """An fp8 cache's tiles meet bf16 queries in fp16 (a conversion per pair, not per element): decodes
    (split) and prefill chunks stay within the query dtype's tolerance of the reference, which multiplies
    in float32, for every query dtype (bf16 on a GPU only)."""
    seq_lens, query_lens = [9, 70, 3, 50, 17], [1, 1, 1, 20, 17]
    q, cache, meta = _paged_setup(seq_lens, query_lens, page=8, kv_heads=2, group=4, dtype=dtype)
    cache, scales = (cache * 4).to(torch.float8_e4m3fn), torch.tensor([0.25, 0.5])
    q = q * 3
    expected = reference.paged_attention(q.float(), cache, meta, 0.2, scales)
    meta.decode_splits = 2
    close(TRITON.paged_attention(q, cache, meta, 0.2, scales), expected, dtype)


@pytest.mark.skipif(not ON_GPU, reason="the Triton interpreter rounds float->fp8 wrongly; checked on a GPU")
def test_fp8_cache_write_matches_reference() -> None:
    tokens, kv_heads, head_dim = 64, 2, 64
    q = torch.randn(tokens, 4, head_dim, dtype=torch.bfloat16)
    k = torch.randn(tokens, kv_heads, head_dim, dtype=torch.bfloat16)
    v = torch.randn(tokens, kv_heads, head_dim, dtype=torch.bfloat16)
    angles = torch.arange(128.0)[:, None] * torch.rand(head_dim // 2)[None]
    scales = torch.tensor([0.5, 0.25])
    positions, slots = torch.randperm(128)[:tokens], torch.randperm(4 * 32)[:tokens]
    expected = torch.zeros(2, 32, 4, kv_heads, head_dim).to(torch.float8_e4m3fn)
    got = expected.clone()
    reference.norm_rope_and_cache(
        q.clone(), k, v, positions, angles.cos(), angles.sin(), expected, slots, None, scales
    )
    TRITON.norm_rope_and_cache(
        q.clone(), k, v, positions, angles.cos(), angles.sin(), got, slots, None, scales
    )
    # the kernel rotates in float32, the reference in bfloat16: at most one fp8 step (1/8) apart
    torch.testing.assert_close(got.float(), expected.float(), atol=0.02, rtol=0.13)


def test_select_ops_picks_the_backend_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert select_ops("torch", cuda) is TORCH_OPS
    assert select_ops("auto", cpu) is TORCH_OPS
    assert select_ops("auto", cuda).name == "triton"  # choosing needs the package, not the device
    assert select_ops("triton", cuda).supports_cuda_graphs
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton's interpreter runs the kernels on the CPU
    interpreted = select_ops("triton", cpu)
    assert interpreted.name == "triton" and not interpreted.supports_cuda_graphs
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="kernels='triton' needs a CUDA device, not cpu"):
        select_ops("triton", cpu)


@pytest.mark.slow  # every variant through the interpreter: 1.5 s
def test_warm_up_runs_every_attention_variant_without_touching_the_cache() -> None:
    """The runner's warm-up call (its argument order included) reaches every kernel variant."""
    cache = _cache(5, 4, 2, 32, torch.float32)
    before = cache.clone()
    for ops in (TORCH_OPS, TRITON):
        ops.warm_up(cache, 4, torch.float32, 4, None)
    assert torch.equal(cache, before)


@pytest.mark.slow
def test_engine_on_triton_kernels_generates_what_it_does_on_the_references(tiny_model_dir) -> None:
    """The whole Triton backend as the engine wires it (warm-up, split decodes, mixed batches, chunked
    prefill) gives the reference backend's greedy tokens in float32 (bf16 near-ties could flip a token);
    on the CPU through the interpreter, compiled on a GPU. A fixed KV cache: sized from free memory, the
    first engine's would leave the second none on a GPU."""
    prompts = [[5, 6, 7], list(range(20, 60)), [9] * 17]
    params = SamplingParams(temperature=0, max_tokens=8)
    tokens = {}
    for kernels in ("torch", "triton"):
        llm = LLM(str(tiny_model_dir("qwen3")), device=DEVICE.type, dtype="float32", kernels=kernels,
                  block_size=4, max_num_batched_tokens=32, num_kv_blocks=256)  # fmt: skip
        assert llm.engine.runner.ops.name == kernels
        outputs = llm.generate(prompts, params, use_tqdm=False)
        tokens[kernels] = [output.outputs[0].token_ids for output in outputs]
    assert tokens["triton"] == tokens["torch"]
