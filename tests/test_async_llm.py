"""The asyncio client: concurrent streams, aborts that free blocks, errors that reach the caller."""

from __future__ import annotations

import asyncio

import pytest
import torch

from tokenmill import LLM, SamplingParams
from tokenmill.config import EngineConfig
from tokenmill.engine.async_llm import (
    MAX_CONSECUTIVE_OOM_STEPS,
    AsyncLLM,
    EngineDeadError,
    RequestFailedError,
)

PROMPTS = [[7 + i, 20, 30 + i] * (i + 1) for i in range(12)]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    client = AsyncLLM(EngineConfig(model=str(tiny_model_dir("llama")), device="cpu", block_size=4))
    yield client
    client.shutdown()


async def collect(client: AsyncLLM, prompt, params: SamplingParams, request_id: str):
    deltas, last = [], None
    async for output in client.generate(prompt, params, request_id):
        deltas.append(output.outputs[0].delta_token_ids)
        last = output
    return deltas, last


def test_concurrent_streams_equal_offline_results(engine: AsyncLLM, tiny_model_dir) -> None:
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)

    async def run_all():
        return await asyncio.gather(*(collect(engine, p, params, f"r{i}") for i, p in enumerate(PROMPTS)))

    results = asyncio.run(run_all())
    offline = LLM(str(tiny_model_dir("llama")), device="cpu").generate(PROMPTS, params, use_tqdm=False)
    for (deltas, last), expected in zip(results, offline):
        assert last.finished and last.outputs[0].finish_reason == "length"
        assert [t for d in deltas for t in d] == last.outputs[0].token_ids == expected.outputs[0].token_ids
        assert len(deltas) == 20  # one update per generated token
    assert engine.engine.block_manager.usage == 0.0


def test_leaving_a_stream_early_aborts_and_frees_blocks(engine: AsyncLLM) -> None:
    params = SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)

    async def run():
        seen = 0
        async for _ in engine.generate(PROMPTS[5], params, "early"):
            seen += 1
            if seen == 3:
                break
        for _ in range(100):
            if not engine.engine.has_unfinished_requests():
                break
            await asyncio.sleep(0.02)

    asyncio.run(run())
    assert not engine.engine.has_unfinished_requests()
    assert engine.engine.block_manager.usage == 0.0


def test_abort_ends_the_stream_with_abort(engine: AsyncLLM) -> None:
    params = SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)

    async def run():
        task = asyncio.create_task(collect(engine, PROMPTS[2], params, "to-abort"))
        await asyncio.sleep(0.2)
        await engine.abort("to-abort")
        return await task

    _, last = asyncio.run(run())
    assert last.finished and last.outputs[0].finish_reason == "abort"
    assert 0 < len(last.outputs[0].token_ids) < 400


def test_errors_reach_the_caller_and_the_engine_lives_on(engine: AsyncLLM) -> None:
    async def run():
        with pytest.raises(ValueError, match="prompt"):
            await collect(engine, [1] * 5000, SamplingParams(), "too-long")
        gen = engine.generate([1, 2], SamplingParams(max_tokens=50, ignore_eos=True), "dup")
        first = await gen.__anext__()
        with pytest.raises(ValueError, match="request_id"):
            await collect(engine, [1, 2], SamplingParams(), "dup")
        await gen.aclose()
        return first

    assert asyncio.run(run()).request_id == "dup"
    assert engine.is_alive


POISON = [99, 98, 97]


def fail_on(client: AsyncLLM, fault: Exception, only_poisoned: bool):
    """Make the runner raise `fault` on steps that hold a poisoned prompt (or on every step)."""
    launch = client.engine.runner.launch

    def faulty(batch, token_source=None):
        if not only_poisoned or any(seq.prompt_token_ids[:3] == POISON for seq in batch.seqs):
            raise fault
        return launch(batch, token_source)

    return faulty


def test_a_failing_step_fails_its_requests_and_the_engine_serves_on(engine: AsyncLLM, monkeypatch) -> None:
    fault = RuntimeError("injected fault")
    monkeypatch.setattr(engine.engine.runner, "launch", fail_on(engine, fault, only_poisoned=True))
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)

    async def run():
        _, before = await collect(engine, [5, 6, 7], params, "healthy-1")
        for attempt in range(5):  # however often: it fails requests, never the engine
            with pytest.raises(RequestFailedError, match="injected fault"):
                await collect(engine, [*POISON, 1], params, f"poisoned-{attempt}")
        _, after = await collect(engine, [5, 6, 7], params, "healthy-2")
        return before, after

    before, after = asyncio.run(run())
    assert after.outputs[0].token_ids == before.outputs[0].token_ids
    assert len(after.outputs[0].token_ids) == 8
    assert engine.is_alive
    assert engine.engine.block_manager.usage == 0.0


def test_an_unexpected_admission_error_fails_only_that_request(engine: AsyncLLM, monkeypatch) -> None:
    process = engine.engine.input_processor.process

    def faulty(request_id, prompt, params):
        if prompt == POISON:
            raise KeyError("injected admission fault")
        return process(request_id, prompt, params)

    monkeypatch.setattr(engine.engine.input_processor, "process", faulty)
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)

    async def run():
        with pytest.raises(RequestFailedError, match="injected admission fault"):
            await collect(engine, POISON, params, "bad-admission")
        return await collect(engine, [5, 6, 7], params, "fine")

    _, last = asyncio.run(run())
    assert last.finished and len(last.outputs[0].token_ids) == 3
    assert engine.is_alive and not engine.engine.has_unfinished_requests()


def test_running_out_of_memory_again_and_again_stops_the_engine(tiny_model_dir) -> None:
    client = AsyncLLM(EngineConfig(model=str(tiny_model_dir("qwen2")), device="cpu"))
    fault = torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    client.engine.runner.launch = fail_on(client, fault, only_poisoned=False)

    async def run():
        for attempt in range(MAX_CONSECUTIVE_OOM_STEPS - 1):
            with pytest.raises(RequestFailedError, match="out of memory"):
                await collect(client, [1, 2, 3], SamplingParams(), f"r{attempt}")
            assert client.is_alive
        with pytest.raises(EngineDeadError, match="out of memory"):
            await collect(client, [1, 2, 3], SamplingParams(), "last")
        with pytest.raises(EngineDeadError, match="stopped"):
            await collect(client, [1, 2, 3], SamplingParams(), "after")

    asyncio.run(run())
    assert not client.is_alive


def test_a_device_error_stops_the_engine_at_once(tiny_model_dir) -> None:
    client = AsyncLLM(EngineConfig(model=str(tiny_model_dir("qwen2")), device="cpu"))
    fault = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    client.engine.runner.launch = fail_on(client, fault, only_poisoned=False)

    async def run():
        with pytest.raises(EngineDeadError, match="illegal memory access"):
            await collect(client, [1, 2, 3], SamplingParams(), "a")

    asyncio.run(run())
    assert not client.is_alive
