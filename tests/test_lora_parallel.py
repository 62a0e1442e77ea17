"""LoRA under tensor and data parallelism (CPU, gloo): each rank holds its part of every adapter (A
whole and B's own rows on column-parallel projections; A's own input columns and B whole on row-parallel
ones, the partial shrinks summed), greedy tokens equal a single rank's; each DP replica loads the
adapters."""

from __future__ import annotations

import pytest
import requests
import torch

from tests.helpers.lora_adapters import save_adapter
from tests.helpers.server_process import ServerProcess
from tokenmill import LLM, LoRARequest, SamplingParams
from tokenmill.config import EngineConfig, ServerConfig
from tokenmill.distributed.group import TensorParallel
from tokenmill.distributed.linear import ShardedLinear
from tokenmill.kernels import lora_reference
from tokenmill.kernels.lora_mapping import LoRAMapping
from tokenmill.kernels.ops import Ops
from tokenmill.lora.layers import LoRALinear, LoRAStep
from tokenmill.quantization import UnquantizedMethod

PARAMS = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
PROMPTS = [[5, 17, 99, 3], [250, 7, 31, 42, 8, 9, 100, 61, 12], [77] * 20]


def _wrapper(split: str, rank: int, out_shards: list[int], step: LoRAStep) -> LoRALinear:
    base = ShardedLinear(32, out_shards, False, UnquantizedMethod(), TensorParallel(rank, 2), split, 8)
    ops = Ops.__new__(Ops)  # only the LoRA ops run here: the references
    return LoRALinear(base, 1, 4, step, ops, torch.float32)


@pytest.mark.parametrize("split", ["column", "row"])
def test_the_ranks_parts_of_an_adapter_add_up_to_the_whole(split: str) -> None:
    """Column: each rank's B rows give its output rows. Row: the ranks' shrinks of their own input
    columns sum to the whole shrink (what the all-reduce does)."""
    torch.manual_seed(0)
    out_shards = [16, 8] if split == "column" else [32]
    step = LoRAStep(max_tokens=3, max_loras=1, device=torch.device("cpu"))
    step.load(
        LoRAMapping(*(torch.tensor(v, dtype=torch.int32) for v in ([0] * 3, [0, 1, 2], [0], [0], [3]))), True
    )
    x = torch.randn(3, 32)
    pairs = [(torch.randn(4, 32), torch.randn(rows, 4)) for rows in out_shards]
    whole = torch.cat([x @ a.T @ b.T * 0.5 for a, b in pairs], dim=1)
    parts = []
    for rank in range(2):
        wrapper = _wrapper(split, rank, out_shards, step)
        wrapper.fill_slot(0, pairs, scaling=0.5)
        local_x = x[:, wrapper.input_columns] if split == "row" else x
        parts.append((local_x, wrapper))
    if split == "column":
        for local_x, wrapper in parts:
            y = torch.zeros(3, sum(wrapper.out_shards))
            h = lora_reference.lora_shrink(local_x, wrapper.lora_a, wrapper.lora_ranks, step.mapping)
            lora_reference.lora_expand(
                y, h, wrapper.lora_b, wrapper.lora_ranks, wrapper.out_shards, step.mapping
            )
            rows = [whole[:, sum(out_shards[:s]) :][:, part] for s, part in enumerate(wrapper.column_parts)]
            torch.testing.assert_close(y, torch.cat(rows, dim=1))
    else:
        h = sum(
            lora_reference.lora_shrink(local_x, w.lora_a, w.lora_ranks, step.mapping) for local_x, w in parts
        )
        y = torch.zeros(3, 32)
        lora_reference.lora_expand(y, h, parts[0][1].lora_b, parts[0][1].lora_ranks, (32,), step.mapping)
        torch.testing.assert_close(y, whole)


def test_lora_is_allowed_with_ranks_and_replicas_but_runtime_loading_needs_one_replica() -> None:
    EngineConfig(enable_lora=True, tensor_parallel_size=2, data_parallel_size=2)
    ServerConfig(enable_lora=True, runtime_lora_updates=True, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="runtime_lora_updates needs data_parallel_size=1"):
        ServerConfig(enable_lora=True, runtime_lora_updates=True, data_parallel_size=2)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    base = tiny_model_dir("qwen3")
    return [
        save_adapter(base, tmp_path_factory.mktemp("tp-a"), seed=31),
        save_adapter(base, tmp_path_factory.mktemp("tp-b"), seed=32, rank=4, targets=["o_proj", "down_proj"]),
    ]


def _mixed(llm: LLM, adapters) -> list[list[int]]:
    requests_ = [None, *(LoRARequest(f"lora{i}", str(path)) for i, path in enumerate(adapters))]
    batch = [(prompt, request) for request in requests_ for prompt in PROMPTS]
    outputs = llm.generate([p for p, _ in batch], PARAMS, use_tqdm=False, lora_request=[r for _, r in batch])
    return [o.outputs[0].token_ids for o in outputs]


@pytest.mark.slow
def test_tensor_parallel_lora_is_token_exact(tiny_model_dir, adapters) -> None:
    """A batch mixing two adapters and the base; one slot, so the adapters take turns in it and the
    worker refills it each time rank 0 does."""
    setup = dict(device="cpu", dtype="float32", enable_lora=True, max_loras=1)
    single = LLM(str(tiny_model_dir("qwen3")), **setup)
    expected = _mixed(single, adapters)
    assert len({tuple(t) for t in expected}) == len(expected), "the adapters must change the answers"
    llm = LLM(str(tiny_model_dir("qwen3")), tensor_parallel_size=2, **setup)
    try:
        assert _mixed(llm, adapters) == expected
    finally:
        llm.engine.shutdown()


@pytest.mark.slow
def test_every_data_parallel_replica_serves_the_adapters(tiny_model_dir, adapters) -> None:
    """One request of six prompts: the router spreads its prompts over both replicas, and each answer
    is the single engine's under the adapter the request's `model` names."""
    base = str(tiny_model_dir("qwen3"))
    prompts = [[11 + i, 40 + i, 7, 99 - i, 3 * i + 1] for i in range(6)]
    offline = LLM(base, device="cpu", enable_lora=True)
    want = {
        model: [
            o.outputs[0].text for o in offline.generate(prompts, PARAMS, use_tqdm=False, lora_request=request)
        ]
        for model, request in [("base", None), ("ft", LoRARequest("ft", str(adapters[0])))]
    }
    server = ServerProcess(
        "--model", base, "--served-model-name", "base", "--data-parallel-size", "2",
        "--lora-modules", f"ft={adapters[0]}", "--warmup-prompts", "2",
    )  # fmt: skip
    try:
        server.wait_ready(timeout=300)
        models = requests.get(server.url + "/v1/models", timeout=10).json()["data"]
        assert [(m["id"], m.get("parent")) for m in models] == [("base", None), ("ft", "base")]
        body = {"prompt": prompts, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
        for model, texts in want.items():
            answer = requests.post(server.url + "/v1/completions", json={**body, "model": model}, timeout=120)
            assert answer.status_code == 200, answer.text
            assert [c["text"] for c in answer.json()["choices"]] == texts, model
    finally:
        assert server.stop() == 0, server.log()
