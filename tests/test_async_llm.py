"""The asyncio client: concurrent streams, aborts that free blocks, errors that reach the caller."""

from __future__ import annotations

import asyncio

import pytest

from tokenmill import LLM, SamplingParams
from tokenmill.config import EngineConfig
from tokenmill.engine.async_llm import AsyncLLM

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


def test_a_failing_step_kills_the_engine_and_fails_every_waiter(tiny_model_dir) -> None:
    client = AsyncLLM(EngineConfig(model=str(tiny_model_dir("qwen2")), device="cpu"))

    def broken_step(batch, token_source=None):
        raise RuntimeError("injected device fault")

    client.engine.runner.launch = broken_step

    async def run():
        with pytest.raises(RuntimeError, match="injected device fault"):
            await collect(client, [1, 2, 3], SamplingParams(), "a")
        with pytest.raises(RuntimeError, match="stopped"):
            await collect(client, [1, 2, 3], SamplingParams(), "b")

    asyncio.run(run())
    assert not client.is_alive
