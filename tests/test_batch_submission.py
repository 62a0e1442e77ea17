"""`AsyncLLM.generate_batch`: many requests admitted as one, each final output delivered once."""

from __future__ import annotations

import asyncio

import pytest

from tokenmill import LLM, SamplingParams
from tokenmill.config import EngineConfig
from tokenmill.engine.async_llm import AsyncLLM, RequestFailedError
from tokenmill.engine.batch_stream import final_outputs
from tokenmill.outputs import CompletionOutput, RequestOutput

PROMPTS = [[7 + i, 20, 30 + i] * (i + 1) for i in range(12)]
IDS = [f"b{i}" for i in range(len(PROMPTS))]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    client = AsyncLLM(EngineConfig(model=str(tiny_model_dir("llama")), device="cpu", block_size=4))
    yield client
    client.shutdown()


async def wait_until_idle(client: AsyncLLM) -> None:
    for _ in range(200):
        if not client.engine.has_unfinished_requests():
            return
        await asyncio.sleep(0.02)


def test_a_batch_is_admitted_before_one_step_and_wakes_the_loop_twice(
    engine: AsyncLLM, tiny_model_dir, monkeypatch
) -> None:
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    admitted_at_first_step: list[int] = []
    step = engine.engine.step

    def recording_step():
        if not admitted_at_first_step:
            admitted_at_first_step.append(len(engine.engine.output_processor))
        return step()

    monkeypatch.setattr(engine.engine, "step", recording_step)

    async def run():
        loop = asyncio.get_running_loop()
        wakeups, threadsafe = [], loop.call_soon_threadsafe

        def counted(*args):
            wakeups.append(args[0])
            return threadsafe(*args)

        loop.call_soon_threadsafe = counted
        starts: list[int] = []
        outputs = await engine.generate_batch(PROMPTS, params, IDS, on_start=lambda: starts.append(1))
        return outputs, len(wakeups), len(starts)

    outputs, wakeups, starts = asyncio.run(run())
    offline = LLM(str(tiny_model_dir("llama")), device="cpu", block_size=4).generate(
        PROMPTS, params, use_tqdm=False
    )
    assert [o.request_id for o in outputs] == IDS
    assert all(o.finished and o.outputs[0].finish_reason == "length" for o in outputs)
    assert [o.outputs[0].token_ids for o in outputs] == [o.outputs[0].token_ids for o in offline]
    assert admitted_at_first_step == [len(PROMPTS)]
    assert wakeups == 2  # the batch started, the batch ended: not once per request per step
    assert starts == 1
    assert engine.engine.block_manager.usage == 0.0


def test_cancelling_a_batch_aborts_its_requests_and_frees_their_blocks(engine: AsyncLLM) -> None:
    params = SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)

    async def run():
        task = asyncio.ensure_future(engine.generate_batch(PROMPTS[:4], params, IDS[:4]))
        while not engine.engine.has_unfinished_requests():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until_idle(engine)

    asyncio.run(run())
    assert not engine.engine.has_unfinished_requests()
    assert engine.engine.block_manager.usage == 0.0


def test_a_refused_request_fails_the_whole_batch_and_admits_none(engine: AsyncLLM) -> None:
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)

    async def run():
        with pytest.raises(ValueError, match="prompt is 5000 tokens"):
            await engine.generate_batch([[5, 6], [1] * 5000, [7, 8]], params, ["r0", "r1", "r2"])
        await wait_until_idle(engine)
        assert not engine.engine.has_unfinished_requests()
        return await engine.generate_batch([[5, 6]], params, ["r0"])  # the ids are free again

    assert asyncio.run(run())[0].outputs[0].finish_reason == "length"
    assert engine.is_alive and engine.engine.block_manager.usage == 0.0


def test_request_ids_must_be_distinct_and_unused(engine: AsyncLLM) -> None:
    params = SamplingParams(temperature=0, max_tokens=50, ignore_eos=True)

    async def run():
        with pytest.raises(ValueError, match="must differ"):
            await engine.generate_batch([[5], [6]], params, ["same", "same"])
        stream = engine.generate([1, 2], params, "busy")
        await anext(stream)
        with pytest.raises(ValueError, match="'busy' is already in use"):
            await engine.generate_batch([[5], [6]], params, ["free", "busy"])
        await stream.aclose()
        await wait_until_idle(engine)

    asyncio.run(run())
    assert engine.engine.block_manager.usage == 0.0


def test_a_failing_step_fails_the_batch_and_the_engine_serves_on(engine: AsyncLLM, monkeypatch) -> None:
    launch = engine.engine.runner.launch

    def faulty(batch, token_source=None):
        if any(seq.prompt_token_ids[:3] == [99, 98, 97] for seq in batch.seqs):
            raise RuntimeError("injected fault")
        return launch(batch, token_source)

    monkeypatch.setattr(engine.engine.runner, "launch", faulty)
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)

    async def run():
        with pytest.raises(RequestFailedError, match="injected fault"):
            await engine.generate_batch([[5, 6, 7], [99, 98, 97, 1]], params, ["ok", "poisoned"])
        await wait_until_idle(engine)
        return await engine.generate_batch([[5, 6, 7]], params, ["ok"])

    assert len(asyncio.run(run())[0].outputs[0].token_ids) == 8
    assert engine.is_alive and engine.engine.block_manager.usage == 0.0


def _output(request_id: str) -> RequestOutput:
    return RequestOutput(request_id, None, [1], [CompletionOutput(0, "x", [2], "length")], True)


def test_final_outputs_of_separate_streams_keep_order_and_cancel_the_rest_on_failure() -> None:
    """The batch path of an engine client that submits requests one by one (data parallelism)."""
    cancelled: list[str] = []

    async def stream(request_id: str, delay: float, fail: bool = False):
        try:
            yield RequestOutput(request_id, None, [1], [], False)
            await asyncio.sleep(delay)
            if fail:
                raise ValueError("refused")
            yield _output(request_id)
        except asyncio.CancelledError:
            cancelled.append(request_id)
            raise

    async def run():
        starts: list[int] = []
        outputs = await final_outputs([stream("a", 0.05), stream("b", 0.0)], lambda: starts.append(1))
        assert [o.request_id for o in outputs] == ["a", "b"] and starts
        with pytest.raises(ValueError, match="refused"):
            await final_outputs([stream("slow", 5.0), stream("bad", 0.0, fail=True)])
        await asyncio.sleep(0)

    asyncio.run(run())
    assert cancelled == ["slow"]
