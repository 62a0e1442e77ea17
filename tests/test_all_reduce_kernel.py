"""The one-way all-reduce kernel (`kernels/triton/all_reduce.py`) against its reference, the rank-order
float32 sum. In one process (the Triton interpreter on the CPU, or one GPU) the ranks run one after
another: a rank's peers that have not run yet are given their words as they would have sent them. On one
GPU two ranks also run at once on two streams; on two GPUs, real processes run it eagerly and replayed
from CUDA graphs through the engine's group code."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tokenmill.kernels.reference import all_reduce_in_rank_order

pytest.importorskip("triton")
from tokenmill.kernels.triton import all_reduce as kernel

SLOT_WORDS = 4096
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _zeroed_slots(world: int) -> list[torch.Tensor]:
    """Each rank's receive slots: 2 sets of `world` senders' SLOT_WORDS words."""
    return [torch.zeros(2 * world * SLOT_WORDS, dtype=torch.uint64, device=DEVICE) for _ in range(world)]


def _addresses(slots: list[torch.Tensor]) -> torch.Tensor:
    """Every rank's slot address, as the kernel reads them (one process maps them all)."""
    return torch.tensor([s.data_ptr() for s in slots], dtype=torch.int64, device=DEVICE)


def _run_ranks_in_turn(
    parts: list[torch.Tensor], slots: list[torch.Tensor], epochs: list[torch.Tensor], block: int = 256
) -> list[torch.Tensor]:
    """Each rank's result, running rank 0 first: before rank r runs, the ranks after it have 'sent'
    each of their words with the epoch of the program that handles it."""
    world = len(parts)
    peer_slots = _addresses(slots)
    results = [part.clone() for part in parts]
    words = parts[0].numel() * parts[0].element_size() // 4
    programs = min(-(-words // block), kernel.MAX_PROGRAMS)
    program = torch.arange(words, device=DEVICE) // block % programs
    for rank in range(world):
        epoch = epochs[rank].long()[program] % kernel.EPOCH_PERIOD + 1
        for sender in range(rank + 1, world):
            index = ((epoch % 2) * world + sender) * SLOT_WORDS + torch.arange(words, device=DEVICE)
            slots[rank].view(torch.int64)[index] = kernel.pack_words(parts[sender], epoch).view(torch.int64)
        kernel.all_reduce(results[rank], slots[rank], peer_slots, epochs[rank], rank, world, block=block)
    return results


@pytest.mark.parametrize(
    ("world", "dtype", "block"),
    [
        # the fast layer runs the first; the others take 0.6-1.5 s each through the interpreter
        (w, d, 256) if (w, d) == (2, torch.float16) else pytest.param(w, d, 256, marks=pytest.mark.slow)
        for w in (2, 3)
        for d in (torch.float16, torch.float32, torch.bfloat16)
    ]
    # up to 188 chunks of 16 words: programs take several (MAX_PROGRAMS 64); 9 s interpreted
    + [pytest.param(2, torch.float32, 16, marks=pytest.mark.slow)],
)
def test_every_rank_holds_the_rank_order_sum_call_after_call(
    world: int, dtype: torch.dtype, block: int
) -> None:
    """Five calls alternate the two slot sets, and the last wraps the epoch: slots left from a call two
    back hold stale words with another epoch, which the kernel must not take. (The interpreter rounds
    to bfloat16 by truncation, so bfloat16 runs on a GPU only.)"""
    if dtype == torch.bfloat16 and DEVICE.type == "cpu":
        pytest.skip("the Triton interpreter truncates to bfloat16")
    torch.manual_seed(0)
    slots = _zeroed_slots(world)
    epochs = [
        torch.full((kernel.MAX_PROGRAMS,), kernel.EPOCH_PERIOD - 3, dtype=torch.int32, device=DEVICE)
        for _ in range(world)
    ]
    for shape in [(3, 1000), (1, 64), (2, 1000), (5, 700), (1, 2)]:
        parts = [torch.randn(shape, dtype=dtype, device=DEVICE) * (rank + 1) for rank in range(world)]
        want = all_reduce_in_rank_order(parts)
        for rank, result in enumerate(_run_ranks_in_turn(parts, slots, epochs, block)):
            assert torch.equal(result, want), (rank, shape)
    assert epochs[0][0] == 2  # program 0 ran every call: period - 2, period - 1, period, 1, 2


@pytest.mark.slow  # waits a second by design
@pytest.mark.skipif(DEVICE.type == "cuda", reason="a host thread's copy would queue behind the kernel")
def test_a_rank_waits_past_stale_words_for_the_ones_of_its_call() -> None:
    """The peer's slots hold its words from two calls back (same slot set, older epoch); the call's
    words arrive a second after the kernel starts. A kernel that took any word, or any nonzero flag,
    would sum the stale ones. (On a GPU, the two-stream test makes rank 0 wait for rank 1.)"""
    world, words = 2, 500
    slots = _zeroed_slots(world)
    peer_slots = _addresses(slots)
    epochs = torch.full((kernel.MAX_PROGRAMS,), 2, dtype=torch.int32, device=DEVICE)  # this call: epoch 3
    parts = [torch.randn(2 * words, dtype=torch.float16, device=DEVICE) for _ in range(world)]
    peer_words = slots[0].view(torch.int64)[(1 * world + 1) * SLOT_WORDS :][:words]  # set 1, sender 1
    peer_words.copy_(
        kernel.pack_words(torch.randn(2 * words, dtype=torch.float16, device=DEVICE), 1).view(torch.int64)
    )

    def arrive() -> None:
        time.sleep(1.0)
        peer_words.copy_(kernel.pack_words(parts[1], 3).view(torch.int64))

    sender = threading.Thread(target=arrive)
    sender.start()
    result = parts[0].clone()
    kernel.all_reduce(result, slots[0], peer_slots, epochs, 0, world, block=256)
    sender.join()
    assert torch.equal(result, all_reduce_in_rank_order(parts))


def test_the_words_sent_carry_the_epoch_above_the_data() -> None:
    x = torch.tensor([1.0, -2.0], dtype=torch.bfloat16)
    (word,) = kernel.pack_words(x, 7).view(torch.int64).tolist()
    assert word >> 32 == 7
    assert word & 0xFFFFFFFF == x.view(torch.int32).item() & 0xFFFFFFFF


def test_a_tensor_larger_than_the_slots_is_refused() -> None:
    slots = torch.zeros(2 * 2 * 8, dtype=torch.uint64, device=DEVICE)
    with pytest.raises(ValueError, match="exceed"):
        kernel.all_reduce(
            torch.zeros(18, device=DEVICE), slots, torch.zeros(2, dtype=torch.int64, device=DEVICE),
            torch.zeros(8, dtype=torch.int32, device=DEVICE), 0, 2,
        )  # fmt: skip


@pytest.mark.parametrize("offset", [0, 1, 2, 4])  # bf16 elements: aligned, mid-word, 4 and 8 bytes off
def test_views_off_the_kernels_alignment_go_through_it_staged(offset: int) -> None:
    """Which kernel runs depends on the size alone (the ranks' addresses may differ): a view that
    starts off 16 bytes is copied to the aligned staging buffer, reduced there and copied back."""
    from tokenmill.distributed.symmetric import ALIGNMENT, ONE_WAY_MAX_BYTES, OneWaySlots, SymmetricAllReduce

    launched: list[int] = []

    def launch(x: torch.Tensor, *args: object) -> None:  # stands in for the kernel: sums with a twin
        launched.append(x.data_ptr() % ALIGNMENT)
        x.mul_(2)

    staging = torch.empty(ONE_WAY_MAX_BYTES, dtype=torch.uint8)
    one_way = OneWaySlots(torch.zeros(1), torch.zeros(1), torch.zeros(1), staging, 0, 2, launch)
    reduce = SymmetricAllReduce({torch.bfloat16: torch.zeros(1)}, "no group: never reached", one_way)
    base = torch.randn(4104, dtype=torch.bfloat16)
    original = base.clone()
    view = base[offset : offset + 4096]
    assert reduce.all_reduce(view) is view
    assert launched == [0]
    assert torch.equal(view, original[offset : offset + 4096] * 2)
    assert torch.equal(base[:offset], original[:offset]) and torch.equal(
        base[offset + 4096 :], original[offset + 4096 :]
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_two_ranks_on_two_streams_of_one_gpu_wait_for_each_other() -> None:
    """Both ranks' kernels run at once on one GPU, each polling the words the other stores: the
    compiled kernel's waits and stores, without a second GPU. Rank 1 starts after a delay, so rank 0
    must really wait. Both kernels are loaded by a first call in turn: loading a kernel (CUDA loads
    them lazily) can wait for the GPU to idle, which it never does while rank 0 waits in the same
    process (ranks on GPUs of their own do not share this)."""
    world = 2
    slots = _zeroed_slots(world)
    peer_slots = _addresses(slots)
    epochs = [torch.zeros(kernel.MAX_PROGRAMS, dtype=torch.int32, device=DEVICE) for _ in range(world)]
    streams = [torch.cuda.Stream(DEVICE) for _ in range(world)]
    for call, rows in enumerate([3, 3, 1, 4, 2]):  # 12, 12, 4, 16 and 8 programs of 256 words
        parts = [torch.randn(rows, 2048, dtype=torch.bfloat16, device=DEVICE) for _ in range(world)]
        want = all_reduce_in_rank_order(parts)
        if call == 0:
            results = _run_ranks_in_turn(parts, slots, epochs)
            torch.cuda._sleep(1)  # loaded too
        else:
            torch.cuda.synchronize()
            for rank in range(world):
                with torch.cuda.stream(streams[rank]):
                    if rank == 1:
                        torch.cuda._sleep(1_000_000)
                    kernel.all_reduce(
                        parts[rank], slots[rank], peer_slots, epochs[rank], rank, world, block=256
                    )
            torch.cuda.synchronize()
            results = parts
        for rank in range(world):
            assert torch.equal(results[rank], want), (call, rank)


def _gpu_rank(rank: int, port: int) -> None:
    from tokenmill.distributed.group import destroy_tensor_parallel, init_tensor_parallel
    from tokenmill.distributed.symmetric import ONE_WAY_MAX_BYTES

    device = torch.device("cuda", rank)
    tp = init_tensor_parallel(rank, 2, port, device)
    assert tp.symmetric is not None and tp.symmetric._one_way is not None
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for numel in (4096, 8 * 4096, 100 * 4098, ONE_WAY_MAX_BYTES // dtype.itemsize):
            generator = torch.Generator(device).manual_seed(rank * 1000 + numel)
            x = torch.randn(numel, dtype=dtype, device=device, generator=generator)
            parts = [torch.empty_like(x) for _ in range(2)]
            torch.distributed.all_gather(parts, x)
            want = all_reduce_in_rank_order(parts)
            assert torch.equal(tp.all_reduce(x.clone()), want), (dtype, numel, "eager")
            static = x.clone()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(3):
                    tp.all_reduce(static)
            for scale in (1.0, -2.0):
                static.copy_(x * scale)
                graph.replay()
                chained = want.float() * scale  # exact: the second and third sums double a power of two
                assert torch.equal(static, (chained * 4).to(dtype)), (dtype, numel, "graph")
    torch.cuda.synchronize()
    destroy_tensor_parallel()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_sum_exactly_eagerly_and_in_cuda_graphs() -> None:
    from tokenmill.distributed.process import run_ranks
    from tokenmill.eval.local_server import free_port

    assert run_ranks(_gpu_rank, 2, free_port(), timeout=300) == [0, 0]
