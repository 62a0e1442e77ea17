"""Tensor parallelism on CPU (gloo): how tensors split, and whole engines whose
greedy tokens must equal a single rank's, with chunked prefill, prefix caching and preemption."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
import torch

from tests.test_correctness import mixed_prompts
from tokenmill import LLM, SamplingParams
from tokenmill.config import ServerConfig
from tokenmill.distributed.group import TensorParallel
from tokenmill.distributed.linear import ShardedLinear
from tokenmill.distributed.sharding import check_splits, rank_units
from tokenmill.distributed.vocab import VocabParallelEmbedding
from tokenmill.distributed.workers import WorkerDiedError
from tokenmill.engine.kv_cache_sizing import kv_bytes_per_block
from tokenmill.models.config import ModelConfig
from tokenmill.quantization import UnquantizedMethod


def test_units_split_evenly_or_replicate_when_fewer_than_ranks() -> None:
    assert [rank_units(8, r, 4) for r in range(4)] == [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    assert [rank_units(2, r, 4) for r in range(4)] == [range(0, 1), range(0, 1), range(1, 2), range(1, 2)]
    with pytest.raises(ValueError, match="evenly"):
        rank_units(6, 0, 4)


def _config(heads: int, kv_heads: int, intermediate: int = 128) -> ModelConfig:
    return ModelConfig(
        architecture="LlamaForCausalLM", vocab_size=320, hidden_size=64, intermediate_size=intermediate,
        num_hidden_layers=1, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=16,
        rms_norm_eps=1e-6, rope_theta=1e4, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip


def test_a_model_that_does_not_split_is_refused_naming_the_field() -> None:
    check_splits(_config(heads=4, kv_heads=2), 4)  # KV heads replicated over pairs of ranks
    with pytest.raises(ValueError, match=r"tensor_parallel_size=3 .*4 attention heads, 2 KV heads"):
        check_splits(_config(heads=4, kv_heads=2), 3)
    with pytest.raises(ValueError, match="intermediate size 101"):
        check_splits(_config(heads=4, kv_heads=4, intermediate=101), 2)


def test_column_parallel_qkv_keeps_the_rank_heads_and_its_replicated_kv_head() -> None:
    """Rank 3 of 4 with 4 query heads and 2 KV heads: query head 3 and KV head 1 (shared with rank 2)."""
    head = 16
    linear = ShardedLinear(
        64, [4 * head, 2 * head, 2 * head], False, UnquantizedMethod(), TensorParallel(3, 4), "column", head
    )
    assert linear.out_shards == (head, head, head)
    q, k, v = (torch.randn(n * head, 64) for n in (4, 2, 2))
    for shard, tensor in enumerate((q, k, v)):
        linear.load("weight", tensor, shard)
    torch.testing.assert_close(linear.weight, torch.cat([q[3 * head :], k[head:], v[head:]]), rtol=0, atol=0)


def test_row_parallel_keeps_the_rank_input_columns_and_refuses_packed_tensors() -> None:
    linear = ShardedLinear(64, [32], False, UnquantizedMethod(), TensorParallel(1, 2), "row", 16)
    weight = torch.randn(32, 64)
    linear.load("weight", weight, None)
    torch.testing.assert_close(linear.weight, weight[:, 32:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="float checkpoints"):
        linear.load("weight", weight.to(torch.int8), None)


def test_row_parallel_multiplies_on_its_method_kernel_gemm() -> None:
    """A quantized o or down shard runs its method's GEMM (the Triton backend's), not the reference, which
    dequantizes the whole weight at every call."""
    calls: list[tuple[int, ...]] = []

    class Gemm:
        def __call__(self, layer: ShardedLinear, x: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(x.shape))
            return x @ layer.weight.T + 1

    method = UnquantizedMethod()
    linear = ShardedLinear(64, [32], True, method, TensorParallel(0, 1), "row", 16)
    linear.load("weight", torch.randn(32, 64), None)
    linear.load("bias", torch.randn(32), None)
    method.gemm = Gemm()  # type: ignore[assignment]
    x = torch.randn(3, 64)
    torch.testing.assert_close(linear(x), x @ linear.weight.T + 1 + linear.bias, rtol=0, atol=0)
    assert calls == [(3, 64)]


def test_vocab_rows_are_padded_on_the_last_rank() -> None:
    embedding = VocabParallelEmbedding(10, 4, TensorParallel(2, 3))  # 4 rows per rank, the last has 2
    full = torch.randn(10, 4)
    part = embedding.checkpoint_part(full)
    torch.testing.assert_close(part, torch.cat([full[8:], torch.zeros(2, 4)]), rtol=0, atol=0)


def test_mp_num_sets_the_tensor_parallel_size(monkeypatch) -> None:
    monkeypatch.setenv("MP_NUM", "2")
    assert ServerConfig().tensor_parallel_size == 2
    monkeypatch.setenv("TOKENMILL_TENSOR_PARALLEL_SIZE", "4")
    assert ServerConfig().tensor_parallel_size == 4


# chunked prefill (24-token steps), preemption (24 blocks of 8) and prefix caching (a second pass)
HARD_SETUP = dict(device="cpu", dtype="float32", num_kv_blocks=24, block_size=8, max_num_batched_tokens=24)


def _two_passes(llm: LLM) -> tuple[list[list[int]], int]:
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    tokens, cached = [], 0
    for _ in range(2):
        outputs = llm.generate(mixed_prompts(), params, use_tqdm=False)
        tokens += [o.outputs[0].token_ids for o in outputs]
        cached = sum(o.num_cached_tokens for o in outputs)
    return tokens, cached


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size"), [("qwen3", 2), ("qwen2", 2), ("llama", 2), ("llama", 4)])
def test_tensor_parallel_greedy_is_token_exact(arch: str, size: int, tiny_model_dir) -> None:
    """The tiny models have 4 query heads and 2 KV heads: TP=4 replicates each KV head on two ranks.
    Decode steps launched ahead (async scheduling) take their input tokens from rank 0's broadcast."""
    single = LLM(str(tiny_model_dir(arch)), **HARD_SETUP)
    expected, _ = _two_passes(single)
    llm = LLM(str(tiny_model_dir(arch)), tensor_parallel_size=size, **HARD_SETUP)
    try:
        got, cached = _two_passes(llm)
        assert llm.engine.runner.kv_caches[0].shape[3] == max(1, 2 // size)  # KV heads on this rank
        assert llm.engine.scheduler.num_preemptions > 0
        assert cached > 0
        assert llm.engine.stats.continued_steps > 0  # input tokens that only rank 0's broadcast gave
    finally:
        llm.engine.shutdown()
    assert got == expected


@pytest.mark.slow
def test_every_rank_holds_an_int8_cache_of_its_kv_heads_with_its_scales(tiny_model_dir) -> None:
    """Under TP=2 each rank caches its one KV head in int8 with a float32 scale per token and head in
    every layer (sized so), and greedy tokens equal a single rank's int8 cache."""
    setup = dict(HARD_SETUP, kv_cache_dtype="int8")
    expected, _ = _two_passes(LLM(str(tiny_model_dir("qwen3")), **setup))
    llm = LLM(str(tiny_model_dir("qwen3")), tensor_parallel_size=2, **setup)
    try:
        got, _ = _two_passes(llm)
        model = llm.engine.runner.model
        cfg = model.config
        cache = llm.engine.runner.kv_caches[0]
        assert cache.dtype == torch.int8 and cache.shape[3] == 1
        scales = [attention.kv_scales for attention in model.attention_layers()]
        assert all(s is not None and s.shape == cache.shape[:-1] for s in scales)
        assert len({s.data_ptr() for s in scales}) == cfg.num_hidden_layers
        per_block = kv_bytes_per_block(model, 8, torch.int8)
        assert per_block == 2 * cfg.num_hidden_layers * 8 * 1 * (cfg.head_dim + 4)
    finally:
        llm.engine.shutdown()
    assert got == expected


@pytest.mark.slow
def test_a_dead_worker_makes_the_next_step_raise(tiny_model_dir) -> None:
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", tensor_parallel_size=2)
    try:
        os.kill(llm.engine.workers.processes[0].pid, signal.SIGKILL)
        # the monitor thread reaps it; a join here too would race it for the exit code
        deadline = time.monotonic() + 10
        while llm.engine.workers.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(WorkerDiedError, match="tokenmill-tp1 exited with code -9"):
            llm.generate([[5, 6, 7]], SamplingParams(max_tokens=2), use_tqdm=False)
    finally:  # the process group must go, or the next engine in this process cannot start
        llm.engine.shutdown()


@pytest.mark.slow
def test_a_model_that_does_not_split_is_a_clear_error_and_stops_the_workers(tiny_model_dir) -> None:
    with pytest.raises(ValueError, match="tensor_parallel_size=3 does not divide"):
        LLM(str(tiny_model_dir("qwen3")), device="cpu", tensor_parallel_size=3)
    assert multiprocessing.active_children() == []


def test_the_offline_api_refuses_data_parallelism_naming_the_field() -> None:
    with pytest.raises(ValueError, match="data_parallel_size: LLM runs one engine"):
        LLM("random:qwen3-tiny", device="cpu", data_parallel_size=2)


@pytest.mark.slow
def test_the_cuda_graph_path_issues_the_same_collectives_on_every_rank(tiny_model_dir, monkeypatch) -> None:
    """The graph path only CUDA takes (capture of every size at start-up, decode steps replayed), run on
    the CPU with stand-in graphs in both processes: every step's check that the worker issued the same
    collectives as rank 0 must pass, and the decode steps must replay graphs on both ranks."""
    from tests.helpers import emulated_graphs
    from tokenmill.distributed import workers

    emulated_graphs.install(monkeypatch.setattr)
    monkeypatch.setattr(workers, "run_worker", emulated_graphs.run_worker)
    setup = dict(HARD_SETUP, max_num_seqs=4, collective_timeout_s=60, step_timeout_s=60)
    llm = LLM(str(tiny_model_dir("qwen3")), tensor_parallel_size=2, **setup)
    try:
        assert len(llm.engine.runner.graphs) == 3  # sizes 1, 2, 4
        outputs = llm.generate(
            mixed_prompts()[:6], SamplingParams(max_tokens=6, ignore_eos=True), use_tqdm=False
        )
        assert [len(o.outputs[0].token_ids) for o in outputs] == [6] * 6
        assert emulated_graphs.REPLAYS["count"] > 0  # rank 0's; a worker without its graph would die
    finally:
        llm.engine.shutdown()
