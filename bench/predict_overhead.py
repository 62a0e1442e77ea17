"""Where one 358-item `POST /predict` spends host time that the offline engine does not (CPU, no model).

A real server (uvicorn, FastAPI, the /predict handler, `AsyncLLM` with its engine thread) runs in this
process on a loopback port; beside it, `LLM.generate` runs the same prompts. In both, the model forward
and sampler are bench/host_step.py's lookup of real answer tokens, so what is left is host work. With
`--device-ms`, each step's tokens become ready that long after the device is free (waiting for them
sleeps and releases the GIL, as a CUDA event wait does), so the host work that overlaps the device on a
GPU overlaps here too. HTTP and offline batches alternate; every figure is the least over `--batches`
(noise only adds).

The HTTP batch's timeline, from timestamps taken inside the server (one clock, one process):
  receive+parse  client sends -> the handler hands the questions to the prompt workers (HTTP, JSON,
                 pydantic validation)
  prompts        chat template and tokenization of every question
  submit         prompts ready -> the engine thread admits the first request
  engine         first request admitted -> last step ends (offline: `engine_offline`)
  respond        last step -> the client has the whole response (fan-out, detokenized answers to the
                 handler, JSON, HTTP)
Then the CPU time of the event loop's thread and of the engine thread over the batch, the wake-ups of
the event loop from other threads, and standalone timings of parts of the path.

Usage: PYTHONPATH=. python bench/predict_overhead.py [--batches 5] [--device-ms 0] [--tokenizer byte]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.host_step import StubRunner, answer_token_pool, use_smollm2_tokenizer
from tokenmill import LLM, SamplingParams
from tokenmill.bench.judge_workload import JudgeWorkload
from tokenmill.config import ServerConfig
from tokenmill.engine.llm_engine import LLMEngine
from tokenmill.engine.model_runner import Launch
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.eval.datasets import load_items
from tokenmill.eval.local_server import free_port
from tokenmill.outputs import RequestOutput
from tokenmill.server.app import create_app
from tokenmill.server.fastdeploy_judge_requests import PredictRequest
from tokenmill.server.judge import _prompt_batch, strip_thinking
from tokenmill.server.metrics import observe_all_finished
from tokenmill.server.state import ServerState

DATA = Path(__file__).resolve().parents[1] / "data" / "official_test.txt"
MODEL = "random:qwen3-tiny"


class EmulatedDevice:
    """Steps run one after another on the "device", each `seconds` long (a prefill step `seconds` per
    `tokens_per_slice` of its tokens); `synchronize` sleeps until a step is done."""

    def __init__(self, seconds: float, tokens_per_slice: int = 512) -> None:
        self.seconds = seconds
        self.tokens_per_slice = tokens_per_slice
        self.free_at = 0.0

    def queue(self, num_tokens: int) -> _Done:
        slices = max(1, -(-num_tokens // self.tokens_per_slice))
        self.free_at = max(time.perf_counter(), self.free_at) + self.seconds * slices
        return _Done(self.free_at)


class _Done:
    def __init__(self, at: float) -> None:
        self.at = at

    def synchronize(self) -> None:
        delay = self.at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class DeviceStub(StubRunner):
    def __init__(self, real: Any, pool: Any, device: EmulatedDevice) -> None:
        super().__init__(real, pool)
        self.device_clock = device

    def launch(self, batch: ScheduledBatch, token_source: Any = None) -> Launch:
        launch = super().launch(batch, token_source)
        if launch.sampled is not None and self.device_clock.seconds > 0:
            launch.done = self.device_clock.queue(batch.num_tokens)  # type: ignore[assignment]
        return launch


class EngineProbe:
    """Timestamps of one engine's admissions and steps (installed on the instance, engine thread)."""

    def __init__(self, engine: LLMEngine) -> None:
        self.reset()
        add, step = engine.add_request, engine.step

        def add_request(*args: Any, **kwargs: Any) -> None:
            now = time.perf_counter()
            self.first_add = self.first_add or now
            add(*args, **kwargs)
            self.last_add = time.perf_counter()

        def timed_step() -> list:
            started = time.perf_counter()
            self.first_step = self.first_step or started
            outputs = step()
            self.last_step = time.perf_counter()
            self.steps += 1
            return outputs

        engine.add_request, engine.step = add_request, timed_step  # type: ignore[method-assign]

    def reset(self) -> None:
        self.first_add = self.last_add = self.first_step = self.last_step = 0.0
        self.steps = 0


def install_stub(device_ms: float, tokenizer: str) -> list[EngineProbe]:
    """Every engine built from now on runs the stub forward (and the SmolLM2 tokenizer if asked)."""
    probes: list[EngineProbe] = []
    original = LLMEngine.__init__

    def patched(self: LLMEngine, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if tokenizer == "smollm2":
            use_smollm2_tokenizer(self)
        device = EmulatedDevice(device_ms / 1000)
        self.runner = DeviceStub(self.runner, answer_token_pool(self.tokenizer), device)
        probes.append(EngineProbe(self))

    LLMEngine.__init__ = patched  # type: ignore[method-assign]
    return probes


class ServerThread:
    """uvicorn on a loopback port, on its own thread and event loop."""

    def __init__(self, config: ServerConfig) -> None:
        self.app = create_app(config)
        self.state: ServerState = self.app.state.tm
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=config.port, log_level="warning")
        )
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self.url = f"http://127.0.0.1:{config.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wakeups = 0
        self.prompt_span = (0.0, 0.0)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def start(self, client: httpx.Client) -> None:
        self.thread.start()
        while True:
            try:
                if client.get(self.url + "/", timeout=60).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        self._count_wakeups()
        self._time_prompt_work()

    def _on_loop(self, function: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return function()

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result()

    def _count_wakeups(self) -> None:
        loop = self.loop
        assert loop is not None
        threadsafe = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.wakeups += 1
            return threadsafe(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]

    def _time_prompt_work(self) -> None:
        prompts = self.state.prompts
        run = prompts.run

        async def timed(*args: Any) -> Any:
            started = time.perf_counter()
            result = await run(*args)
            self.prompt_span = (started, time.perf_counter())
            return result

        prompts.run = timed  # type: ignore[method-assign]

    def loop_cpu(self) -> float:
        return self._on_loop(time.thread_time)

    def engine_cpu(self) -> float:
        engine = self.state.lifecycle.engine
        assert engine is not None

        async def ask() -> float:
            return await engine.call(lambda _: time.thread_time())

        loop = self.loop
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(ask(), loop).result()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def http_batch(server: ServerThread, client: httpx.Client, probe: EngineProbe, body: bytes) -> dict:
    probe.reset()
    server.wakeups = 0
    loop_cpu, engine_cpu = server.loop_cpu(), server.engine_cpu()
    server.wakeups = 0
    sent = time.perf_counter()
    response = client.post(
        server.url + "/predict", content=body, headers={"content-type": "application/json"}
    )
    received = time.perf_counter()
    response.raise_for_status()
    wakeups = server.wakeups
    loop_cpu, engine_cpu = server.loop_cpu() - loop_cpu, server.engine_cpu() - engine_cpu
    prompts_started, prompts_done = server.prompt_span
    return {
        "total": received - sent,
        "receive+parse": prompts_started - sent,
        "prompts": prompts_done - prompts_started,
        "submit": probe.first_add - prompts_done,
        "engine": probe.last_step - probe.first_add,
        "respond": received - probe.last_step,
        "loop_cpu": loop_cpu,
        "engine_cpu": engine_cpu,
        "wakeups": wakeups,
        "steps": probe.steps,
        "answers": response.json()["response"],
    }


def offline_batch(llm: LLM, probe: EngineProbe, prompts: list[list[int]], params: SamplingParams) -> dict:
    probe.reset()
    cpu, started = time.thread_time(), time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return {
        "total": time.perf_counter() - started,
        "engine": probe.last_step - probe.first_add,
        "engine_cpu": time.thread_time() - cpu,
        "steps": probe.steps,
        "answers": [strip_thinking(o.outputs[0].text) for o in outputs],
        "outputs": outputs,
    }


def best_of(function: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def standalone_parts(
    state: ServerState, questions: list[str], body: bytes, outputs: list[RequestOutput]
) -> dict:
    """Pieces of the HTTP path timed alone, on this thread."""
    from fastapi.responses import JSONResponse

    answers = [output.outputs[0].text for output in outputs]
    tokenizer = state.prompts.tokenizer
    messages = [[{"role": "user", "content": q}] for q in questions]
    texts = [tokenizer.apply_chat_template(m, enable_thinking=False) for m in messages]
    output_ids = [tokenizer.encode(a, add_special_tokens=False) for a in answers]
    backend = tokenizer.hf.backend_tokenizer
    return {
        "json.loads+validate": best_of(lambda: PredictRequest.model_validate(json.loads(body))),
        "prompt builder x358": best_of(lambda: _prompt_batch(state.prompts, questions, None)),
        "chat template x358": best_of(
            lambda: [tokenizer.apply_chat_template(m, enable_thinking=False) for m in messages]
        ),
        "encode one by one": best_of(lambda: [tokenizer.encode(t, add_special_tokens=False) for t in texts]),
        "encode_batch": best_of(lambda: backend.encode_batch(texts, add_special_tokens=False)),
        "decode one by one": best_of(lambda: [tokenizer.decode(ids) for ids in output_ids]),
        "decode_batch": best_of(lambda: backend.decode_batch(output_ids, skip_special_tokens=True)),
        "metrics x358": best_of(lambda: observe_all_finished(state.metrics, outputs)),
        "strip_thinking x358": best_of(lambda: [strip_thinking(a) for a in answers]),
        "JSONResponse": best_of(lambda: JSONResponse({"response": answers})),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=5, help="HTTP and offline batches, alternating")
    parser.add_argument("--device-ms", type=float, default=0.0, help="emulated device time per step")
    parser.add_argument("--tokenizer", choices=("byte", "smollm2"), default="byte")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    args = parser.parse_args()
    probes = install_stub(args.device_ms, args.tokenizer)
    config = ServerConfig(
        model=MODEL, device="cpu", port=free_port(), max_num_seqs=args.max_num_seqs, log_level="warning"
    )
    questions = [item.question for item in load_items(str(DATA))]
    body = json.dumps(
        {"prompt": questions, "max_new_tokens": args.max_new_tokens, "temperature": 0.0}
    ).encode()
    server = ServerThread(config)
    with httpx.Client(timeout=600) as client:
        server.start(client)
        served_probe = probes[0]
        llm = LLM(MODEL, device="cpu", max_num_seqs=args.max_num_seqs)
        offline_probe = probes[-1]
        prompts = JudgeWorkload("judge", str(DATA)).prompts(llm.tokenizer)
        params = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens)
        offline_batch(llm, offline_probe, prompts, params)  # untimed, as bench/first_batch.py does
        http_batch(server, client, served_probe, body)
        http_runs, offline_runs = [], []
        for _ in range(args.batches):
            http_runs.append(http_batch(server, client, served_probe, body))
            offline_runs.append(offline_batch(llm, offline_probe, prompts, params))
        parts = standalone_parts(server.state, questions, body, offline_runs[0]["outputs"])
        server.stop()
    same = all(run["answers"] == offline_runs[0]["answers"] for run in [*http_runs, *offline_runs])
    print(
        f"{len(questions)} questions, {args.max_new_tokens} new tokens, tokenizer {args.tokenizer}, "
        f"device {args.device_ms} ms/step, least of {args.batches} alternating batches; "
        f"answers identical: {same}"
    )
    for name in (
        "total",
        "receive+parse",
        "prompts",
        "submit",
        "engine",
        "respond",
        "loop_cpu",
        "engine_cpu",
    ):
        print(f"  http    {name:15} {min(r[name] for r in http_runs) * 1000:9.1f} ms")
    for name in ("total", "engine", "engine_cpu"):
        print(f"  offline {name:15} {min(r[name] for r in offline_runs) * 1000:9.1f} ms")
    print(
        f"  http    wakeups {statistics.median(r['wakeups'] for r in http_runs):.0f}, steps "
        f"{statistics.median(r['steps'] for r in http_runs):.0f}; offline steps "
        f"{statistics.median(r['steps'] for r in offline_runs):.0f}"
    )
    ratio = min(r["total"] for r in offline_runs) / min(r["total"] for r in http_runs)
    print(f"  offline / http (least of each): {ratio:.3f}")
    print("standalone parts (least of 5):")
    for name, seconds in parts.items():
        print(f"  {name:22} {seconds * 1000:9.2f} ms")


if __name__ == "__main__":
    main()
