"""The shrink programs of the LoRA-folded GEMVs (`lora_fold`), in Triton's interpreter: for 1 to 8 rows
under a mix of adapters (one targeting some shards only, one of a rank below the slots' padding) and
rows without one, each prologue equals the PyTorch reference; every shrink program counts itself in at
its projection's site, so repeated forwards (graph replays) and launches of other projections in between
give the same output; and a row's output depends on its own input and adapter only, not on the other
rows nor on how many there are (2 to 8). On a GPU (`TRITON_INTERPRET=0 pytest
tests/test_lora_shrink_programs.py`) the same tests run compiled, where the tiles really wait on the
shrink programs, and the repeated launches look for a race."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from tokenmill.kernels import reference
from tokenmill.kernels.lora_mapping import NO_ADAPTER, LoRAWeights, ShrinkScratch

skinny_gemm = pytest.importorskip("tokenmill.kernels.triton.skinny_gemm")
lora_fold = pytest.importorskip("tokenmill.kernels.triton.lora_fold")
triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
LAUNCHES = 100 if ON_GPU else 2  # of the same inputs, each giving the first's output

R = NO_ADAPTER
SLOTS = [1, R, 0, 2, 1, 0, R, 2]  # row i's slot
OUT_SHARDS = (32, 16, 16)
K, MAX_RANK = 48, 8
RANKS = [[8, 8, 8], [8, 0, 8], [3, 5, 2]]  # slot 1 skips the middle shard; slot 2 below the padding


def _lora(
    prologue: str, slots: list[int], site: int = 0, scratch: ShrinkScratch | None = None
) -> LoRAWeights:
    """Random adapters; rank rows past a slot's rank hold NaN, which the kernels must never read."""
    out_shards = OUT_SHARDS if prologue == "norm" else (sum(OUT_SHARDS),)
    ranks = RANKS if prologue == "norm" else [[rank[0]] for rank in RANKS]
    a = torch.randn(len(ranks), len(out_shards), MAX_RANK, K) / K**0.5
    b = torch.randn(len(ranks), sum(out_shards), MAX_RANK) / MAX_RANK**0.5
    for slot, shard_ranks in enumerate(ranks):
        start = 0
        for shard, (width, rank) in enumerate(zip(out_shards, shard_ranks)):
            a[slot, shard, rank:] = float("nan")
            b[slot, start : start + width, rank:] = float("nan")
            start += width
    return LoRAWeights(
        a.to(DEVICE), b.to(DEVICE), torch.tensor(ranks, dtype=torch.int32, device=DEVICE), out_shards,
        torch.tensor(slots, dtype=torch.int32, device=DEVICE), scratch or ShrinkScratch.allocate(8, DEVICE), site,
    )  # fmt: skip


def _inputs(prologue: str, rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, weight, residual) of one projection: x a gate|up pair behind SiLU-and-mul."""
    generator = torch.Generator().manual_seed(seed)
    width = 2 * K if prologue == "silu_mul" else K
    x = torch.randn(rows, width, generator=generator)
    weight = torch.randn(sum(OUT_SHARDS), K, generator=torch.Generator().manual_seed(99)) / K**0.5
    residual = torch.randn(rows, sum(OUT_SHARDS), generator=generator)
    return x.to(DEVICE), weight.to(DEVICE), residual.to(DEVICE)


def _run(ops, prologue: str, x, weight, residual, lora: LoRAWeights, forward: bool = True) -> torch.Tensor:
    """One launch; `forward`: a Triton one as the first of a forward pass (the counts zeroed)."""
    if forward and ops is skinny_gemm:
        lora.scratch.begin_forward()
    norm = torch.linspace(0.5, 1.5, K, device=DEVICE)
    if prologue == "norm":
        return ops.rms_norm_linear(x, norm, 1e-6, weight, None, lora)
    if prologue == "silu_mul":
        return ops.silu_mul_linear(x, weight, residual, lora)
    return ops.linear(x, weight, None, residual, lora)


def _no_nan_rows(lora: LoRAWeights) -> LoRAWeights:
    """The same adapters with the padding zeroed, for the reference (which multiplies all of it)."""
    a, b = lora.a.nan_to_num(0.0), lora.b.nan_to_num(0.0)
    return dataclasses.replace(lora, a=a, b=b)


PROLOGUES = ["none", "norm", "silu_mul"]


@pytest.fixture(autouse=True)
def _narrow_tiles(monkeypatch) -> None:
    """Tiles chosen as for a GPU of 16 SMs: one-token tiles 4 weight rows wide, so a shrink program
    takes 4 of a shard's 8 rank rows and a tile expands a shard's 8 (the CPU counts as 1 SM: 16-row
    tiles, each shrink program a whole shard and more)."""
    monkeypatch.setattr(skinny_gemm, "num_sms", lambda device: 16)


@pytest.mark.parametrize("prologue", PROLOGUES)
@pytest.mark.parametrize(
    "rows",
    [  # 0.1-0.4 s each interpreted: the fast layer runs one token on 16-row tiles
        pytest.param(1, marks=pytest.mark.slow),
        "1 on 16-row tiles",
        pytest.param(2, marks=pytest.mark.slow),
        *[pytest.param(rows, marks=pytest.mark.slow) for rows in range(3, 9)],
    ],
)
def test_each_row_gets_its_own_adapters_delta(rows: int | str, prologue: str, monkeypatch) -> None:
    if isinstance(rows, str):
        monkeypatch.setattr(skinny_gemm, "num_sms", lambda device: 1)
        rows = 1
    torch.manual_seed(rows)
    lora = _lora(prologue, SLOTS[:rows])
    x, weight, residual = _inputs(prologue, rows, seed=rows)
    got = _run(skinny_gemm, prologue, x, weight, residual, lora)
    want = _run(reference, prologue, x, weight, residual, _no_nan_rows(lora))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    _assert_counted(lora, prologue, rows, skinny_gemm.num_sms(DEVICE))


def _producers(lora: LoRAWeights, prologue: str, rows: int, sms: int) -> int:
    """The shrink programs of a launch: a row's rank rows in blocks of the launch's BLOCK_N."""
    block_n = skinny_gemm.tile_shape(rows, sum(OUT_SHARDS), K, sms, prologue == "silu_mul")[1]
    return rows * triton.cdiv(len(lora.out_shards) * MAX_RANK, block_n)


def _assert_counted(lora: LoRAWeights, prologue: str, rows: int, sms: int) -> None:
    """Every shrink program of the last launch counted itself in at its site, and no other site moved."""
    counts = lora.scratch.counts.tolist()
    assert counts[lora.site] == _producers(lora, prologue, rows, sms)
    assert set(counts[: lora.site] + counts[lora.site + 1 :]) == {0}


@pytest.mark.parametrize(
    ("rows", "prologue"),
    [  # 0.3-0.9 s each interpreted: the fast layer runs 5 rows without a prologue
        pytest.param(1, "norm", marks=pytest.mark.slow),
        (5, "none"),
        pytest.param(5, "silu_mul", marks=pytest.mark.slow),
    ],
)
def test_repeated_forwards_count_afresh_and_agree(rows: int, prologue: str) -> None:
    """As a CUDA graph replays a forward: same buffers, same output, the site's count zeroed as each
    forward starts and left at the launch's shrink programs by it (a count kept from the last forward
    would let the tiles read s before it is written)."""
    lora = _lora(prologue, SLOTS[:rows], site=3)
    x, weight, residual = _inputs(prologue, rows, seed=0)
    first = _run(skinny_gemm, prologue, x, weight, residual, lora)
    for _ in range(1, LAUNCHES):
        assert torch.equal(_run(skinny_gemm, prologue, x, weight, residual, lora), first)
        _assert_counted(lora, prologue, rows, 16)


def test_launches_of_two_sites_in_one_forward_share_the_scratch() -> None:
    """q|k|v (norm, site 0) then o (site 1) on one scratch in one forward, as a layer runs them: both
    equal the reference, and each site holds its own launch's shrink programs."""
    scratch = ShrinkScratch.allocate(8, DEVICE)
    rows = 3
    qkv, o = _lora("norm", SLOTS[:rows], 0, scratch), _lora("none", SLOTS[:rows], 1, scratch)
    x, weight, residual = _inputs("norm", rows, seed=1)
    want = [
        _run(reference, p, x, weight, residual, _no_nan_rows(lora))
        for p, lora in (("norm", qkv), ("none", o))
    ]
    for _ in range(LAUNCHES):
        first = _run(skinny_gemm, "norm", x, weight, residual, qkv)
        second = _run(skinny_gemm, "none", x, weight, residual, o, forward=False)
        torch.testing.assert_close([first, second], want, rtol=1e-4, atol=1e-4)
    counts = scratch.counts.tolist()
    assert counts[:2] == [_producers(qkv, "norm", rows, 16), _producers(o, "none", rows, 16)]
    assert set(counts[2:]) == {0}


@pytest.mark.parametrize(
    "prologue", ["norm", *[pytest.param(p, marks=pytest.mark.slow) for p in ("none", "silu_mul")]]
)
def test_a_rows_output_depends_only_on_its_own_row(prologue: str) -> None:
    """Row 0 (slot 1) and row 2 (slot 0) of batches of 2 to 8 rows whose other rows differ in input and
    adapter: bit for bit the same (the spec-decode and batch tests rely on it). A row's s is its own
    shrink programs' alone, whatever the width."""
    x, weight, residual = _inputs(prologue, 8, seed=0)
    lora = _lora(prologue, SLOTS)
    full = _run(skinny_gemm, prologue, x, weight, residual, lora)
    for rows in (3, 6):
        others, _, other_residual = _inputs(prologue, rows, seed=rows)
        others[[0, 2]], other_residual[[0, 2]] = x[[0, 2]], residual[[0, 2]]
        slots = [SLOTS[0], SLOTS[(rows + 1) % 8], SLOTS[2], *SLOTS[3:rows][::-1]]
        mixed = dataclasses.replace(lora, token_slots=torch.tensor(slots, dtype=torch.int32, device=DEVICE))
        got = _run(skinny_gemm, prologue, others, weight, other_residual, mixed)
        assert torch.equal(got[[0, 2]], full[[0, 2]])
    pair = _run(skinny_gemm, prologue, x[:2], weight, residual[:2], lora)
    assert torch.equal(pair[0], full[0])
