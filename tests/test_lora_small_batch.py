"""The LoRA delta folded into the fused small-batch GEMVs (Triton, run by the interpreter on CPU) against
the PyTorch reference and a per-row float64 definition: each prologue (none, RMSNorm, SiLU-and-mul), one
row (CUDA-core tiles) and 2 to 8 rows (tensor-core tiles), fused shards, mixed adapters and rows without
one, ranks below the slots' padding and shards an adapter does not target; that the folded kernels
compile for Hopper and Blackwell; and that a decode step with an adapter launches no more kernels than
without one."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections import Counter

import numpy as np
import pytest
import torch

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, resource_usage, run_compiled
from tests.helpers.launch_count import count_launches
from tokenmill import LLM, LoRARequest, SamplingParams
from tokenmill.kernels import reference
from tokenmill.kernels.lora_mapping import MAX_FOLDED_RANK, NO_ADAPTER, LoRAWeights, ShrinkScratch

skinny_gemm = pytest.importorskip("tokenmill.kernels.triton.skinny_gemm")
lora_fold = pytest.importorskip("tokenmill.kernels.triton.lora_fold")

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")


def _adapters(num_slots, out_shards, k, max_rank, ranks, dtype, padding=0.0) -> LoRAWeights:
    """Random adapters: slot i's shard s holds rank ranks[i][s] (0: not targeted); the rows past a rank
    hold `padding` (the kernels must read only the real ones)."""
    a = torch.randn(num_slots, len(out_shards), max_rank, k, device=DEVICE) / k**0.5
    b = torch.randn(num_slots, sum(out_shards), max_rank, device=DEVICE) / max_rank**0.5
    bounds = np.cumsum([0, *out_shards])
    for slot, shard_ranks in enumerate(ranks):
        for shard, rank in enumerate(shard_ranks):
            a[slot, shard, rank:] = padding
            b[slot, bounds[shard] : bounds[shard + 1], rank:] = padding
    ranks_tensor = torch.tensor(ranks, dtype=torch.int32, device=DEVICE)
    empty = torch.empty(0, dtype=torch.int32, device=DEVICE)
    scratch = ShrinkScratch.allocate(8, DEVICE)
    return LoRAWeights(a.to(dtype), b.to(dtype), ranks_tensor, tuple(out_shards), empty, scratch, site=0)


def _definition(x, weight, bias, residual, lora: LoRAWeights, prologue, norm) -> torch.Tensor:
    """f(x)·Wᵀ + bias + Σ_s B[slot, shard s]·A[slot, s]·f(x) (real ranks only) + residual, per row, in
    float64."""
    x = x.double()
    if prologue == "norm":
        x = norm.double() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    elif prologue == "silu_mul":
        gate, up = x.chunk(2, dim=-1)
        x = torch.nn.functional.silu(gate) * up
    out = x @ weight.double().T + (0 if bias is None else bias.double())
    bounds = np.cumsum([0, *lora.out_shards])
    for t, slot in enumerate(lora.token_slots.tolist()):
        if slot != NO_ADAPTER:
            for s, rank in enumerate(lora.ranks[slot].tolist()):
                h = lora.a[slot, s, :rank].double() @ x[t]
                out[t, bounds[s] : bounds[s + 1]] += (
                    lora.b[slot, bounds[s] : bounds[s + 1], :rank].double() @ h
                )
    return out + (0 if residual is None else residual.double())


def _run(ops, prologue, x, weight, bias, residual, norm, lora):
    """One launch, as a forward of its own (the counts zeroed)."""
    if lora is not None:
        lora.scratch.begin_forward()
    if prologue == "norm":
        return ops.rms_norm_linear(x, norm, 1e-6, weight, bias, lora)
    if prologue == "silu_mul":
        return ops.silu_mul_linear(x, weight, residual, lora)
    return ops.linear(x, weight, bias, residual, lora)


R = NO_ADAPTER
CASES = [
    # (row slots, out shards, in, max rank, per-slot shard ranks, prologue); the cases marked slow take
    # 0.2-0.5 s each through the interpreter
    pytest.param(  # one token, q|k|v: one shard per column tile
        [0], (64, 32, 32), 64, 8, [[8, 8, 8]], "norm", marks=pytest.mark.slow
    ),
    pytest.param(  # only q and v, a smaller q rank
        [1], (64, 32, 32), 64, 8, [[8, 0, 8], [4, 0, 8]], "norm", marks=pytest.mark.slow
    ),
    ([1, R, 0, 1], (40, 24, 24), 48, 4, [[4, 4, 4], [2, 4, 3]], "norm"),  # mixed; tiles straddle shards
    pytest.param(  # gate|up; a rank not a power of two
        [0, 0, 1], (48, 48), 80, 20, [[20, 20], [12, 0]], "norm", marks=pytest.mark.slow
    ),
    pytest.param(  # o: 8 rows, several K steps
        [1, 0, R, 1, 0, 1, 0, 1], (64,), 600, 16, [[16], [16]], "none", marks=pytest.mark.slow
    ),
    ([0], (40,), 600, 16, [[7]], "none"),  # o, one token, several K steps
    ([R, 0], (40,), 96, 8, [[8]], "silu_mul"),  # down: reads gate|up, 2 x 96 wide
    ([0], (40,), 96, 8, [[8]], "silu_mul"),
    ([R, R, R], (32, 32), 32, 4, [[4, 4], [4, 4]], "norm"),  # no adapter: the base GEMV's result
    pytest.param(  # one adapter, 5 rows (0.5 s interpreted)
        [2, 2, 2, 2, 2], (96, 32, 32), 64, 16, [[16] * 3, [16] * 3, [16] * 3], "norm", marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize(("token_slots", "out_shards", "k", "max_rank", "ranks", "prologue"), CASES)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_the_fused_gemv_adds_each_rows_adapter_to_its_projection(
    backend, token_slots, out_shards, k, max_rank, ranks, prologue
) -> None:
    """The rows past each rank hold garbage in the Triton case: the kernel must use only real rows."""
    torch.manual_seed(0)
    ops = reference if backend == "reference" else skinny_gemm
    rows, n = len(token_slots), sum(out_shards)
    padding = 0.0 if backend == "reference" else 1e3
    lora = _adapters(len(ranks), out_shards, k, max_rank, ranks, torch.float32, padding)
    lora = dataclasses.replace(lora, token_slots=torch.tensor(token_slots, dtype=torch.int32, device=DEVICE))
    x = torch.randn(rows, 2 * k if prologue == "silu_mul" else k, device=DEVICE)
    weight = torch.randn(n, k, device=DEVICE) / k**0.5
    bias = torch.randn(n, device=DEVICE) if prologue != "silu_mul" else None
    residual = torch.randn(rows, n, device=DEVICE) if prologue != "norm" else None
    norm = torch.rand(k, device=DEVICE) + 0.5
    got = _run(ops, prologue, x, weight, bias, residual, norm, lora)
    expected = _definition(x, weight, bias, residual, lora, prologue, norm)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    if all(slot == NO_ADAPTER for slot in token_slots):
        assert torch.equal(got, _run(ops, prologue, x, weight, bias, residual, norm, None))


# Triton's interpreter computes bfloat16 wrongly (numpy has no bfloat16): bfloat16 runs on a GPU only.
@pytest.mark.parametrize("dtype", [torch.float16, *([torch.bfloat16] if ON_GPU else [])])
@pytest.mark.parametrize("rows", [1, pytest.param(4, marks=pytest.mark.slow)])  # 4 rows: 0.4-1.3 s each
# the fast layer runs SiLU-and-mul (a residual, and gate|up read twice as wide); each takes ~0.3 s
@pytest.mark.parametrize(
    "prologue", [*(pytest.param(p, marks=pytest.mark.slow) for p in ("none", "norm")), "silu_mul"]
)
def test_triton_rounds_as_the_reference_in_half_precision(dtype, rows, prologue) -> None:
    """The delta is rounded where the reference rounds it (A·x, then B·A·x, then the sum, before the
    residual): the results agree to a rounding or two of the output."""
    torch.manual_seed(1)
    k, out_shards = 128, (96, 96)
    lora = _adapters(3, out_shards, k, 16, [[16, 16], [16, 8], [0, 16]], dtype)
    slots = torch.tensor([2, NO_ADAPTER, 0, 1][:rows], dtype=torch.int32, device=DEVICE)
    lora = dataclasses.replace(lora, token_slots=slots)
    x = torch.randn(rows, 2 * k if prologue == "silu_mul" else k, dtype=dtype, device=DEVICE)
    weight = (torch.randn(192, k, device=DEVICE) / k**0.5).to(dtype)
    residual = torch.randn(rows, 192, dtype=dtype, device=DEVICE) if prologue != "norm" else None
    norm = (torch.rand(k, device=DEVICE) + 0.5).to(dtype)
    want = _run(reference, prologue, x, weight, None, residual, norm, lora)
    got = _run(skinny_gemm, prologue, x, weight, None, residual, norm, lora)
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_a_column_tile_expands_only_its_shards_rank_values() -> None:
    """Qwen3-0.6B's q|k|v at rank 16: the head-aligned shards put each 16-column tile in one shard, so a
    tile reads 16 values of s and B, not 48; odd shards fall back to every shard's. A shrink program
    takes as many rank rows as a tile takes weight rows: 3 a row for q|k|v's 16-row tiles, 4 for o's
    4-row ones."""
    x = torch.empty(1, 8)
    lora = _adapters(2, (2048, 1024, 1024), 8, 16, [[16] * 3] * 2, torch.float32)
    assert lora_fold.fold_args(lora, 1, 4096, 16, x)["BLOCK_R"] == 16
    assert lora_fold.fold_args(lora, 2, 4096, 16, x)["producers"] == 2 * 3
    odd = _adapters(2, (40, 24, 24), 8, 16, [[16] * 3] * 2, torch.float32)
    assert lora_fold.fold_args(odd, 1, 88, 16, x)["BLOCK_R"] == 64
    o = _adapters(1, (1024,), 8, 16, [[16]], torch.float32)
    assert lora_fold.fold_args(o, 1, 1024, 4, x)["producers"] == 4
    none = lora_fold.fold_args(None, 1, 4096, 16, x)
    assert none["HAS_LORA"] is False and none["producers"] == 0


def compile_every_variant(capability: int) -> None:
    """Each folded kernel in bf16 (called in a fresh Python: see `run_compiled`), its shrink programs
    (their count's release) and tiles (the acquire poll of the count): one-token and tensor-core tiles,
    one shard's and every shard's rank values."""
    x = torch.empty(1, dtype=torch.bfloat16)
    ints = torch.empty(1, dtype=torch.int32)
    lora = dict(lora_a_ptr=x, lora_b_ptr=x, ranks_ptr=ints, slots_ptr=ints, shrinks_ptr=torch.empty(1),
                stride_s=192, counts_ptr=ints, site=5, producers=3, shard_end0=2048,
                shard_end1=3072, HAS_LORA=True, MAX_RANK=16)  # fmt: skip
    sizes = dict(rows=1, n=4096, k=1024, stride_x=1024, stride_w=1024, stride_o=4096)
    residual = dict(residual_ptr=x, stride_r=4096, HAS_RESIDUAL=True)
    for block_m, block_n, block_k, shards, block_r in [
        (1, 1, 1024, 3, 64),
        (1, 4, 2048, 1, 16),
        (1, 16, 512, 3, 16),
        (16, 16, 256, 3, 64),
    ]:
        tile = dict(**lora, **sizes, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SHARDS=shards,
                    BLOCK_R=block_r)  # fmt: skip
        compile_for(skinny_gemm._gemv_kernel, capability, x_ptr=x, weight_ptr=x, out_ptr=x, bias_ptr=x,
                    HAS_BIAS=True, **residual, **tile)  # fmt: skip
        compile_for(skinny_gemm._rms_norm_gemv_kernel, capability, x_ptr=x, weight_ptr=x, out_ptr=x,
                    norm_weight_ptr=x, bias_ptr=x, eps=1e-6, HAS_BIAS=False, **tile)  # fmt: skip
        compile_for(skinny_gemm._silu_mul_gemv_kernel, capability, x_ptr=x, weight_ptr=x, out_ptr=x,
                    **residual, **tile)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("capability", [ARCHITECTURES["hopper"], ARCHITECTURES["blackwell-rtx"]])
def test_folded_kernels_compile_for_hopper_and_blackwell(capability: int) -> None:
    run_compiled("tests.test_lora_small_batch:compile_every_variant", capability)


def one_token_tiles_keep_their_occupancy(capability: int) -> None:
    """Each kernel's one-token tiles of 8 warps (Qwen3-0.6B's q|k|v and gate|up: 16 rows, o and down: 4),
    compiled with the options their launches take (`launch_options`): without LoRA within
    `LORA_ONE_TOKEN_MAX_REGISTERS` registers a thread, and with LoRA (rank 16 over two shards, and the
    largest folded rank over three) capped there without spills, so as many programs share an SM."""
    cap = skinny_gemm.LORA_ONE_TOKEN_MAX_REGISTERS
    x = torch.empty(1, dtype=torch.bfloat16)
    ints = torch.empty(1, dtype=torch.int32)
    sizes = dict(rows=1, n=6144, k=1024, stride_x=1024, stride_w=1024, stride_o=6144)
    kernels = {
        skinny_gemm._gemv_kernel: dict(bias_ptr=x, residual_ptr=x, stride_r=6144, HAS_BIAS=False,
                                       HAS_RESIDUAL=True),
        skinny_gemm._rms_norm_gemv_kernel: dict(norm_weight_ptr=x, bias_ptr=x, eps=1e-6, HAS_BIAS=False),
        skinny_gemm._silu_mul_gemv_kernel: dict(residual_ptr=x, stride_r=6144, HAS_RESIDUAL=True),
    }  # fmt: skip
    folds = [(1, 1), (2, 16), (3, MAX_FOLDED_RANK)]  # (shards, max rank); (1, 1): no LoRA
    for kernel, extra in kernels.items():
        for (block_n, block_k), (shards, rank) in itertools.product([(16, 512), (4, 2048)], folds):
            lora = rank > 1
            cubin = compile_for(
                kernel, capability, dict(num_warps=8, **skinny_gemm.launch_options(1, lora)), aligned=True,
                x_ptr=x, weight_ptr=x, out_ptr=x, **sizes, **extra, lora_a_ptr=x, lora_b_ptr=x,
                ranks_ptr=ints, slots_ptr=ints, shrinks_ptr=torch.empty(1), stride_s=192, counts_ptr=ints,
                site=1, producers=2, shard_end0=3072, shard_end1=6144, BLOCK_M=1, BLOCK_N=block_n,
                BLOCK_K=block_k, HAS_LORA=lora, SHARDS=shards, MAX_RANK=rank, BLOCK_R=max(16, rank),
            )  # fmt: skip
            used = resource_usage(cubin)
            what = f"{kernel.__name__} {block_n}x{block_k}, {shards} shards of rank {rank}: {used}"
            assert used["REG"] <= cap and used["LOCAL"] == used["STACK"] == 0, what


@pytest.mark.slow
@pytest.mark.parametrize("capability", [ARCHITECTURES["hopper"], ARCHITECTURES["blackwell-rtx"]])
def test_lora_one_token_tiles_share_an_sm_as_the_plain_ones_do(capability: int) -> None:
    run_compiled("tests.test_lora_small_batch:one_token_tiles_keep_their_occupancy", capability)


def _decode_launches(llm, lora_request, prompts: int, monkeypatch) -> tuple[Counter, int]:
    """The launches of the model forward pass of one decode step of `prompts` sequences, and how many
    of them carried a LoRA delta."""
    model = llm.engine.runner.model
    counts: list[tuple[int, Counter]] = []
    forward = model.forward
    folded = Counter()

    def counting_folds(lora, *args):
        folded["now"] += lora is not None
        return lora_fold.fold_args(lora, *args)

    def counted(input_ids, positions, meta):
        folded["now"] = 0
        with count_launches() as launches:
            hidden = forward(input_ids, positions, meta)
        counts.append((input_ids.shape[0], launches))
        launches["folded"] = folded["now"]
        return hidden

    monkeypatch.setattr(skinny_gemm, "fold_args", counting_folds)

    model.forward = counted
    try:
        params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
        llm.generate(
            [[5, 6, 7 + i] for i in range(prompts)], params, use_tqdm=False, lora_request=lora_request
        )
    finally:
        del model.forward
    decodes = [launches for rows, launches in counts if rows == prompts]
    assert decodes, "no decode forward pass ran"
    return decodes[-1], decodes[-1].pop("folded")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts launches in the interpreter")
@pytest.mark.parametrize("prompts", [1, 3])
def test_an_adapter_adds_no_launch_to_a_decode_step(prompts, tiny_model_dir, tmp_path, monkeypatch) -> None:
    """Every module targeted, one token and three (the tensor-core tiles): the decode step launches
    exactly the base step's kernels, the four fused GEMVs per layer carrying the deltas."""
    from tests.helpers.lora_adapters import save_adapter

    path = save_adapter(tiny_model_dir("qwen3"), tmp_path, seed=1)
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", kernels="triton", enable_lora=True)
    layers = llm.engine.model_config.num_hidden_layers
    base, base_folded = _decode_launches(llm, None, prompts, monkeypatch)
    lora, lora_folded = _decode_launches(llm, LoRARequest("a", str(path)), prompts, monkeypatch)
    assert lora == base
    assert sum(n for name, n in base.items() if "gemv" in name) == 4 * layers  # the fused path ran
    assert (base_folded, lora_folded) == (0, 4 * layers)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts launches in the interpreter")
def test_an_adapter_costs_nothing_on_the_projections_it_does_not_target(
    tiny_model_dir, tmp_path, monkeypatch
):
    """An adapter of q and v only: outside graphs, o, gate|up and down run the plain GEMVs."""
    from tests.helpers.lora_adapters import save_adapter

    path = save_adapter(tiny_model_dir("qwen3"), tmp_path, seed=1, targets=["q_proj", "v_proj"])
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", kernels="triton", enable_lora=True)
    layers = llm.engine.model_config.num_hidden_layers
    _, folded = _decode_launches(llm, LoRARequest("qv", str(path)), 1, monkeypatch)
    assert folded == layers  # q|k|v only


@pytest.mark.slow  # a whole engine each (1.8 s under the interpreter)
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="Triton kernels on CPU tensors")
@pytest.mark.parametrize("max_rank", [MAX_FOLDED_RANK, 2 * MAX_FOLDED_RANK])
def test_ranks_past_the_fold_limit_keep_the_ordinary_path(max_rank: int, tiny_model_dir) -> None:
    """The fused GEMVs carry LoRA deltas up to MAX_FOLDED_RANK; a larger `max_lora_rank` leaves the
    layers on the batched shrink/expand kernels, whose tiles do not grow with the rank."""
    from tokenmill.models import small_batch

    llm = LLM(
        str(tiny_model_dir("qwen3")), device="cpu", kernels="triton", enable_lora=True,
        max_lora_rank=max_rank, num_kv_blocks=16, enforce_eager=True,
    )  # fmt: skip
    layer = llm.engine.runner.model.layers[0]
    assert small_batch.takes(layer.ops.small_batch, layer, 1) == (max_rank <= MAX_FOLDED_RANK)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="Triton kernels on CPU tensors")
def test_each_forward_zeroes_the_counts_and_each_projection_counts_at_its_own_site(
    tiny_model_dir, tmp_path, monkeypatch
) -> None:
    """The wrapped projections' sites are distinct (0 .. 4 per layer), each forward pass zeroes the
    counts once as it starts, and after a fused decode step every projection's site holds its launch's
    shrink programs (one row: its rank rows over the launch's tile width), the other sites none."""
    from tests.helpers.lora_adapters import save_adapter
    from tokenmill.lora.layers import LoRALinear

    path = save_adapter(tiny_model_dir("qwen3"), tmp_path, seed=1)
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", kernels="triton", enable_lora=True)
    model, step = llm.engine.runner.model, llm.engine.runner.lora_step
    wrappers = [module for module in model.modules() if isinstance(module, LoRALinear)]
    assert [wrapper.site for wrapper in wrappers] == list(range(4 * len(model.layers)))
    forwards, forward = [], model.forward
    model.forward = lambda *args: forwards.append(args) or forward(*args)
    starts, begin_forward = [], step.begin_forward
    step.begin_forward = lambda: starts.append(1) or begin_forward()
    launched: dict[int, int] = {}  # site -> shrink programs of its last fused launch

    def recording_folds(lora, *args):
        folded = lora_fold.fold_args(lora, *args)
        if lora is not None:
            launched[lora.site] = folded["producers"]
        return folded

    monkeypatch.setattr(skinny_gemm, "fold_args", recording_folds)
    try:
        params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
        llm.generate([[5, 6, 7]], params, use_tqdm=False, lora_request=LoRARequest("a", str(path)))
    finally:
        del model.forward, step.begin_forward
    assert len(starts) == len(forwards) >= 2
    counts = step.scratch.counts.tolist()
    assert sorted(launched) == [wrapper.site for wrapper in wrappers]
    assert [counts[site] for site in sorted(launched)] == [launched[site] for site in sorted(launched)]
    assert set(counts[len(wrappers) :]) == {0}


def test_a_site_launched_twice_in_one_forward_is_an_error() -> None:
    """Its second launch would find the count full and read s before it is written; a new forward may
    launch it again."""
    from tokenmill.lora.layers import LoRAStep

    step = LoRAStep(8, 2, torch.device("cpu"))
    step.begin_forward()
    step.claim_site(3)
    step.claim_site(4)
    with pytest.raises(AssertionError, match="site 3 launched twice"):
        step.claim_site(3)
    step.begin_forward()
    step.claim_site(3)
