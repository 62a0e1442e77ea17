"""The fused small-batch GEMVs equal their references (composed of the existing ones), fill the GPU
without splitting K, and the decoder layer built on them gives what the ordinary layer gives.

On CI the kernels run through Triton's interpreter (float32, float16); on a GPU
(`TRITON_INTERPRET=0 pytest tests/test_small_batch_kernels.py`) the same tests run compiled, bf16 too.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, run_compiled
from tokenmill import LLM, SamplingParams
from tokenmill.bench.compile_log import CompileLog
from tokenmill.kernels import reference
from tokenmill.kernels.ops import select_ops
from tokenmill.kernels.triton import skinny_gemm
from tokenmill.kernels.triton.lora_fold import fold_args
from tokenmill.models import small_batch

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
DTYPES = [torch.float32, torch.float16, *([torch.bfloat16] if ON_GPU else [])]
# the GEMV tests below run float32 in the fast layer, every dtype in the slow one
DTYPE_PARAMS = [DTYPES[0], *(pytest.param(dtype, marks=pytest.mark.slow) for dtype in DTYPES[1:])]
# (rows, out, in, SMs): one token (CUDA-core GEMV) on tiles 4, 16 and 1 weight rows wide (as chosen for a
# GPU of that many SMs), several K steps, ragged tiles; 3 and 8 tokens (tensor-core dot) likewise (8 tokens
# in the slow layer only)
CASES = [
    (1, 24, 96, 6),
    (1, 20, 600, 1),
    (1, 5, 64, 8),
    (3, 37, 100, 1),
    pytest.param(8, 20, 600, 1, marks=pytest.mark.slow),
]
# (out, in) of every projection of Qwen3 0.6B, 1.7B, 4B and 8B (qkv, o, gate|up, down)
QWEN3_SHAPES = [
    *[(4096, 1024), (1024, 2048), (6144, 1024), (1024, 3072)],
    *[(4096, 2048), (2048, 2048), (12288, 2048), (2048, 6144)],
    *[(6144, 2560), (2560, 4096), (19456, 2560), (2560, 9728)],
    *[(6144, 4096), (4096, 4096), (24576, 4096), (4096, 12288)],
]


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def as_if_on(monkeypatch: pytest.MonkeyPatch, sms: int) -> None:
    """Tiles chosen as for a GPU of `sms` SMs (the CPU counts as one)."""
    monkeypatch.setattr(skinny_gemm, "num_sms", lambda device: sms)


def close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """Within a few roundings of the output: the kernel sums K in another order than the reference."""
    tolerance = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}[dtype]
    torch.testing.assert_close(got.float(), expected.float(), atol=tolerance, rtol=tolerance)


def weights(out: int, inp: int, dtype: torch.dtype) -> torch.Tensor:
    return (torch.randn(out, inp) / inp**0.5).to(dtype)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize(("rows", "out", "inp", "sms"), CASES)
def test_linear_with_bias_and_residual(dtype, rows: int, out: int, inp: int, sms: int, monkeypatch) -> None:
    as_if_on(monkeypatch, sms)
    x, weight = torch.randn(rows, inp, dtype=dtype), weights(out, inp, dtype)
    bias, residual = torch.randn(out, dtype=dtype), torch.randn(rows, out, dtype=dtype)
    close(skinny_gemm.linear(x, weight), reference.linear(x, weight), dtype)
    got = skinny_gemm.linear(x, weight, bias, residual)
    close(got, reference.linear(x, weight, bias, residual), dtype)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize(("rows", "out", "inp", "sms"), CASES)
def test_rms_norm_linear(dtype, rows: int, out: int, inp: int, sms: int, monkeypatch) -> None:
    as_if_on(monkeypatch, sms)
    x, weight = torch.randn(rows, inp, dtype=dtype) * 3, weights(out, inp, dtype)
    norm_weight, bias = (torch.rand(inp) + 0.5).to(dtype), torch.randn(out, dtype=dtype)
    got = skinny_gemm.rms_norm_linear(x, norm_weight, 1e-6, weight, bias)
    close(got, reference.rms_norm_linear(x, norm_weight, 1e-6, weight, bias), dtype)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize(("rows", "out", "inp", "sms"), CASES)
def test_silu_mul_linear(dtype, rows: int, out: int, inp: int, sms: int, monkeypatch) -> None:
    as_if_on(monkeypatch, sms)
    gate_up, weight = torch.randn(rows, 2 * inp, dtype=dtype), weights(out, inp, dtype)
    residual = torch.randn(rows, out, dtype=dtype)
    got = skinny_gemm.silu_mul_linear(gate_up, weight, residual)
    close(got, reference.silu_mul_linear(gate_up, weight, residual), dtype)


def test_a_row_gets_the_same_bits_whatever_the_batch_around_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each output is one program's fixed-order sum, with no batch-dependent split and no atomics: the
    same bits run after run, and for a row of a batch of 2 or of 8."""
    as_if_on(monkeypatch, 3)
    x, weight = torch.randn(8, 200), weights(20, 200, torch.float32)
    norm_weight = torch.rand(200) + 0.5
    batch = skinny_gemm.rms_norm_linear(x, norm_weight, 1e-6, weight)
    assert torch.equal(skinny_gemm.rms_norm_linear(x[:2], norm_weight, 1e-6, weight), batch[:2])
    assert torch.equal(batch, skinny_gemm.rms_norm_linear(x, norm_weight, 1e-6, weight))
    one = skinny_gemm.rms_norm_linear(x[:1], norm_weight, 1e-6, weight)
    assert torch.equal(one, skinny_gemm.rms_norm_linear(x[:1], norm_weight, 1e-6, weight))


@pytest.mark.parametrize("sms", [132, 170])
def test_one_token_tiles_cover_every_sm_without_splitting_k(sms: int) -> None:
    for out, inp in QWEN3_SHAPES:
        block_m, block_n, block_k = skinny_gemm.tile_shape(1, out, inp, sms)
        assert block_m == 1 and -(-out // block_n) >= sms, (out, inp)
        assert block_n * block_k <= skinny_gemm.TILE_ELEMENTS and block_k >= 256
    assert skinny_gemm.tile_shape(1, 151936, 1024, 132) == (1, 16, 512)  # the widest tile where N is large
    assert skinny_gemm.tile_shape(1, 1024, 3072, 132) == (1, 4, 2048)  # narrower to cover the SMs
    assert skinny_gemm.tile_shape(8, 1024, 3072, 132) == (16, 16, 256)  # a batch: tensor-core tiles
    # behind SiLU-and-mul, a batch runs one-token tiles per token (the tensor-core variant was 8x slower)
    assert skinny_gemm.tile_shape(5, 1024, 3072, 132, silu_prologue=True) == (1, 16, 512)


def test_small_batch_path_can_be_turned_off() -> None:
    assert select_ops("torch", torch.device("cpu")).small_batch is not None
    assert select_ops("torch", torch.device("cpu"), small_batch=False).small_batch is None


def compile_every_variant(capability: int) -> None:
    """Called in a fresh process by the test below: each kernel, bf16 and fp16, its options on, the
    one-token and the tensor-core tile."""
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.empty(0, dtype=dtype)
        tensors = dict(x_ptr=x, weight_ptr=x, out_ptr=x, **fold_args(None, 0, 0, 1, x))  # no LoRA
        residual = dict(residual_ptr=x, stride_r=1024, HAS_RESIDUAL=True)
        for block_m, block_n, block_k in [(1, 4, 2048), (16, 16, 256)]:
            sizes = dict(rows=1, n=1024, k=3072, stride_x=3072, stride_w=3072, stride_o=1024)
            sizes.update(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
            compile_for(
                skinny_gemm._gemv_kernel, capability, **tensors, **sizes, **residual, bias_ptr=x, HAS_BIAS=True
            )  # fmt: skip
            compile_for(
                skinny_gemm._rms_norm_gemv_kernel, capability, **tensors, **sizes, norm_weight_ptr=x,
                bias_ptr=x, eps=1e-6, HAS_BIAS=True,
            )  # fmt: skip
            compile_for(skinny_gemm._silu_mul_gemv_kernel, capability, **tensors, **sizes, **residual)


@pytest.mark.slow
@pytest.mark.parametrize("capability", [ARCHITECTURES["hopper"], ARCHITECTURES["blackwell-rtx"]])
def test_kernel_compiles_for_hopper_and_blackwell(capability: int) -> None:
    run_compiled("tests.test_small_batch_kernels:compile_every_variant", capability)


@pytest.mark.parametrize(
    ("arch", "kernels"),
    [
        ("qwen2", "torch"),  # a qkv bias in the fused norm GEMV
        pytest.param("qwen3", "torch", marks=pytest.mark.slow),
        pytest.param("qwen3", "triton", marks=pytest.mark.slow),  # through the interpreter: ~1 min
        pytest.param("qwen2", "triton", marks=pytest.mark.slow),
    ],
)
def test_fused_layers_decode_what_the_ordinary_layers_decode(
    arch: str, kernels: str, tiny_model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In float32, the same greedy tokens with the small-batch path as without it, and it really ran:
    the fused layers for the decodes of 3 sequences (on a GPU, while capturing their graphs) and never
    for the 34-token prefill; the LM head's GEMV for every step (each samples 3 rows)."""
    rows: list[int] = []
    fused_forward = small_batch.forward

    def counting(ops, layer, positions, hidden, residual, meta):
        rows.append(hidden.shape[0])
        return fused_forward(ops, layer, positions, hidden, residual, meta)

    heads: list[bool] = []
    head_takes = small_batch.head_takes

    def counting_heads(ops, lm_head, tokens):
        heads.append(head_takes(ops, lm_head, tokens))
        return heads[-1]

    monkeypatch.setattr(small_batch, "forward", counting)
    monkeypatch.setattr(small_batch, "head_takes", counting_heads)
    tokens, used = {}, {}
    for on in (True, False):
        rows.clear()
        llm = LLM(str(tiny_model_dir(arch)), device=DEVICE.type, dtype="float32", kernels=kernels,
                  small_batch_kernels=on, block_size=4, num_kv_blocks=64, max_num_seqs=4)  # fmt: skip
        params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
        outputs = llm.generate([[5, 6, 7], list(range(20, 40)), [9] * 11], params, use_tqdm=False)
        tokens[on], used[on] = [output.outputs[0].token_ids for output in outputs], set(rows)
    assert tokens[True] == tokens[False]
    assert used[False] == set() and used[True] and max(used[True]) <= 4
    assert any(heads)  # every step samples at most 3 rows
    assert ON_GPU or used[True] == {3}


@pytest.mark.skipif(not ON_GPU, reason="compiles and CUDA graphs: on a GPU")
def test_start_up_compiles_what_a_small_batch_step_runs(tiny_model_dir) -> None:
    """After start-up (graph capture), a short prompt's eager prefill and its decodes, and the LM head
    of each (eager, at widths 1 and 2: both tile kinds), compile no GEMV variant: a server's first
    few-sequence step may be the tail of the judged batch."""
    llm = LLM(str(tiny_model_dir("qwen3")), kernels="triton", max_num_seqs=8, num_kv_blocks=64)
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    with CompileLog() as log:
        llm.generate([[5, 6, 7]], params, use_tqdm=False)
        llm.generate([[5, 6, 7], [8, 9]], params, use_tqdm=False)
    assert [v.describe() for v in log.variants if "gemv" in v.kernel] == []
