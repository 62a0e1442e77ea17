"""The order of each tensor-parallel step's events on both ranks, read from their event logs
(`distributed/timeline.py`) by position, not by time: rank 0 sends a step launched ahead before it waits
for the previous step's tokens and before it queues the step itself, and the worker goes from a message
straight to that step's launch, every step once and in order; the tokens stay those of a single rank."""

from __future__ import annotations

import pytest

from tests.test_correctness import mixed_prompts
from tokenmill import LLM, SamplingParams
from tokenmill.distributed.timeline import TIMELINE_ENV, Stamp, load_timeline, stamp_token_waits

SETUP = dict(device="cpu", dtype="float32", num_kv_blocks=64, block_size=8)


def _positions(log: list[Stamp]) -> dict[tuple[str, int], int]:
    positions = {}
    for index, (what, step, _) in enumerate(log):
        assert (what, step) not in positions, f"{what} twice for step {step}"
        positions[what, step] = index
    return positions


@pytest.mark.slow
def test_rank_0_sends_a_step_ahead_before_waiting_and_the_worker_launches_on_arrival(
    tiny_model_dir, tmp_path, monkeypatch
) -> None:
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    prompts = mixed_prompts()[:3]
    single = LLM(str(tiny_model_dir("qwen3")), **SETUP)
    expected = [o.outputs[0].token_ids for o in single.generate(prompts, params, use_tqdm=False)]
    monkeypatch.setenv(TIMELINE_ENV, str(tmp_path))  # before the worker is spawned: it reads it too
    llm = LLM(str(tiny_model_dir("qwen3")), tensor_parallel_size=2, **SETUP)
    try:
        assert llm.engine.workers is not None and llm.engine.workers.timeline is not None
        stamp_token_waits(llm.engine.runner, llm.engine.workers.timeline)
        got = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
        continued = llm.engine.stats.continued_steps
    finally:
        llm.engine.shutdown()
    assert got == expected

    rank0_log = load_timeline(tmp_path, 0)["host"]
    rank0 = _positions(rank0_log)
    steps = max(step for what, step, _ in rank0_log if what == "sent")
    assert continued > 0
    # Each step is sent before rank 0 queues it; a step launched ahead (async scheduling) is sent
    # before rank 0 blocks on the previous step's tokens, so the worker never waits on that wait.
    sampling = 0
    for step in range(1, steps + 1):
        if ("waiting", step) in rank0:  # all but a last step launched ahead of a finished request
            assert rank0["sent", step] < rank0["waiting", step] < rank0["tokens", step]
        if ("launched", step) in rank0:  # the steps that sample: rank 0 queues them after sending
            assert rank0["sent", step] < rank0["launched", step]
            sampling += 1
    assert sampling >= continued
    ahead = [s for s in range(2, steps + 1) if rank0["sent", s] < rank0["waiting", s - 1]]
    assert len(ahead) == continued

    worker_log = load_timeline(tmp_path, 1)["host"]
    worker = _positions(worker_log)
    assert [step for what, step, _ in worker_log if what == "received"] == list(range(1, steps + 1))
    for step in range(1, steps + 1):  # nothing else between a message and its launch, or after
        assert worker["waiting", step] + 1 == worker["received", step] == worker["launched", step] - 1
        assert worker["launched", step] + 1 == worker["waiting", step + 1]
