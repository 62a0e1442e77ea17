"""What the engine counts about itself: step counters for benchmarks, and the load that metrics and the
data-parallel router read.

The step loop only bumps these counters and the readers (the bench harness, /metrics, a replica's
reports) only read them, so they live here, apart from both the engine core and its clients: neither
side needs the other's module to know what a step or a load is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenmill.engine.llm_engine import LLMEngine
    from tokenmill.engine.scheduler import ScheduledBatch


@dataclass
class StepStats:
    """Counters for benchmarks: steps run, and the time of pure-decode steps and of the others."""

    steps: int = 0
    decode_steps: int = 0
    decode_seconds: float = 0.0
    other_seconds: float = 0.0  # steps with prompt tokens (prefill, or prefill mixed with decodes)
    continued_steps: int = 0  # decode steps launched before the previous step's tokens were known
    spec_drafts: int = 0  # sequence-steps that verified proposals
    spec_proposed_tokens: int = 0
    spec_accepted_tokens: int = 0

    @property
    def spec_acceptance_rate(self) -> float | None:
        return self.spec_accepted_tokens / self.spec_proposed_tokens if self.spec_proposed_tokens else None

    @property
    def spec_mean_accepted_length(self) -> float | None:
        """Proposed tokens accepted per verifying sequence-step (it emits one more, the target's)."""
        return self.spec_accepted_tokens / self.spec_drafts if self.spec_drafts else None

    def record_step(self, batch: ScheduledBatch, seconds: float) -> None:
        """A step of `batch` took `seconds`: a pure-decode step's time counts apart from the others'."""
        self.steps += 1
        if batch.num_decodes == len(batch):
            self.decode_steps += 1
            self.decode_seconds += seconds
        else:
            self.other_seconds += seconds

    def record_speculation(self, drafts: int, proposed: int, accepted: int) -> None:
        """A verify step: `drafts` sequences proposed `proposed` tokens, `accepted` of them accepted."""
        self.spec_drafts += drafts
        self.spec_proposed_tokens += proposed
        self.spec_accepted_tokens += accepted


@dataclass(frozen=True)
class SpeculationCounts:
    """Speculative decoding since the engine started (metrics)."""

    drafts: int
    proposed: int
    accepted: int

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


@dataclass(frozen=True)
class EngineLoad:
    """An engine's load as metrics and the data-parallel router see it."""

    running: int
    waiting: int
    kv_cache_usage: float
    speculation: SpeculationCounts | None = None  # None: the engine does not speculate


def engine_load(engine: LLMEngine) -> EngineLoad:
    """The engine's load, read from any thread: it may be a step old."""
    scheduler, stats = engine.scheduler, engine.stats
    speculation = None
    if engine.speculator is not None:
        speculation = SpeculationCounts(
            stats.spec_drafts, stats.spec_proposed_tokens, stats.spec_accepted_tokens
        )
    return EngineLoad(len(scheduler.running), len(scheduler.waiting), engine.block_manager.usage, speculation)
