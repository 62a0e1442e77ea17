"""`bench --data-parallel-size N`: the offline workload through N engine replicas and the server's router.

The replicas are the server's (`DataParallelLLM`), so the benchmark measures what serving gets: every
request is routed as it arrives, all at once like a /predict batch. Step statistics stay in the
replicas, so a data-parallel result reports throughput only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from tokenmill.config import EngineConfig
from tokenmill.distributed.data_parallel import DataParallelLLM
from tokenmill.engine.stats import StepStats
from tokenmill.lora.adapter import LoRARequest
from tokenmill.models.config import ModelConfig
from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.tokenizer import Tokenizer


@dataclass
class _EngineSummary:
    """The parts of `LLMEngine` the offline benchmark reads."""

    tokenizer: Tokenizer
    model_config: ModelConfig
    stats: StepStats = field(default_factory=StepStats)


class DataParallelOffline:
    """`LLM.generate` over data-parallel replicas."""

    def __init__(self, config: EngineConfig) -> None:
        self.client = DataParallelLLM(config)
        self.engine = _EngineSummary(self.client.tokenizer, self.client.engine.model_config)

    def generate(
        self,
        prompts: Sequence[list[int]],
        params: Sequence[SamplingParams],
        use_tqdm: bool = False,
        lora_request: Sequence[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """`lora_request` is there for `LLM.generate`'s signature: the configuration already refuses LoRA
        with data_parallel_size > 1."""
        if lora_request is not None:
            raise ValueError("lora_request: data-parallel replicas run without LoRA adapters")
        return asyncio.run(self._generate_all(prompts, params))

    async def _generate_all(
        self, prompts: Sequence[list[int]], params: Sequence[SamplingParams]
    ) -> list[RequestOutput]:
        async def one(index: int) -> RequestOutput:
            last = None
            async for output in self.client.generate(prompts[index], params[index], f"bench-{index}", True):
                last = output
            assert last is not None
            return last

        return list(await asyncio.gather(*(one(i) for i in range(len(prompts)))))

    def shutdown(self) -> None:
        self.client.shutdown()
