"""Prometheus metrics under `tokenmill:`, named like vLLM's so existing dashboards carry over."""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tokenmill.engine.stats import EngineLoad
from tokenmill.outputs import RequestOutput

disable_created_metrics()

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


class _EngineGauges(Collector):
    """Read at scrape time from the engine, so they are never stale; one sample per data-parallel
    replica (label `replica`) when there are several."""

    _GAUGES = (
        ("tokenmill:num_requests_running", "Sequences in the running batch", "running"),
        ("tokenmill:num_requests_waiting", "Sequences waiting to be scheduled", "waiting"),
        ("tokenmill:kv_cache_usage_perc", "Fraction of KV-cache blocks in use", "kv_cache_usage"),
    )

    def __init__(self, loads: Callable[[], list[EngineLoad]]) -> None:
        self._loads = loads

    def collect(self) -> Iterator[Metric]:
        loads = self._loads() or [EngineLoad(0, 0, 0.0)]
        labels = ["replica"] if len(loads) > 1 else []
        for name, documentation, field in self._GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for replica, load in enumerate(loads):
                family.add_metric([str(replica)] if labels else [], getattr(load, field))
            yield family
        yield from _speculation_metrics(loads, labels)


def _speculation_metrics(loads: list[EngineLoad], labels: list[str]) -> Iterator[Metric]:
    """Speculative decoding's counters, where an engine speculates."""
    if not any(load.speculation is not None for load in loads):
        return
    counters = [
        ("tokenmill:spec_decode_num_drafts", "Sequence-steps that verified proposals", "drafts"),
        ("tokenmill:spec_decode_num_draft_tokens", "Proposed tokens", "proposed"),
        ("tokenmill:spec_decode_num_accepted_tokens", "Accepted proposed tokens", "accepted"),
    ]
    for name, documentation, field in counters:
        family = CounterMetricFamily(name, documentation, labels=labels)
        for replica, load in enumerate(loads):
            if load.speculation is not None:
                family.add_metric([str(replica)] if labels else [], getattr(load.speculation, field))
        yield family
    rate = GaugeMetricFamily(
        "tokenmill:spec_decode_acceptance_rate", "Accepted over proposed tokens since start", labels=labels
    )
    for replica, load in enumerate(loads):
        if load.speculation is not None:
            rate.add_metric([str(replica)] if labels else [], load.speculation.acceptance_rate)
    yield rate


class _TokenGapHistogram(Collector):
    """A histogram fed a request's token timestamps in one call (thousands at once for a long answer,
    hundreds of answers at once for a /predict batch), so their gaps are binned in a few array
    operations rather than by a locked `observe` each."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = np.array(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one is +Inf
        self._sum = 0.0

    def observe_gaps(self, stamp_lists: Sequence[Sequence[float]]) -> None:
        """Record the gap between each pair of consecutive timestamps of each list (bucket bounds are
        inclusive)."""
        lengths = np.fromiter(map(len, stamp_lists), dtype=np.int64, count=len(stamp_lists))
        stamps = itertools.chain.from_iterable(stamp_lists)
        gaps = np.diff(np.fromiter(stamps, dtype=np.float64, count=int(lengths.sum())))
        crossings = np.cumsum(lengths)[:-1] - 1  # gap i follows stamp i: these join two lists
        within = np.ones(len(gaps), dtype=bool)
        within[crossings[(crossings >= 0) & (crossings < len(gaps))]] = False
        gaps = gaps[within]
        buckets = np.searchsorted(self._bounds, gaps, side="left")
        self._counts += np.bincount(buckets, minlength=len(self._counts))
        self._sum += float(gaps.sum())

    def collect(self) -> Iterator[Metric]:
        cumulative = list(itertools.accumulate(self._counts.tolist()))
        buckets = [(floatToGoString(b), c) for b, c in zip(self._bounds.tolist(), cumulative)] + [
            ("+Inf", cumulative[-1])
        ]
        yield HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=self._sum)


class Metrics:
    def __init__(self, loads: Callable[[], list[EngineLoad]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EngineGauges(loads))
        self.prompt_tokens = Counter(
            "tokenmill:prompt_tokens", "Prompt tokens processed", registry=self.registry
        )
        self.generation_tokens = Counter(
            "tokenmill:generation_tokens", "Tokens generated", registry=self.registry
        )
        self.request_success = Counter(
            "tokenmill:request_success",
            "Finished requests by finish reason",
            ["finished_reason"],
            registry=self.registry,
        )
        self.request_failure = Counter(
            "tokenmill:request_failure",
            "Requests that ended without an answer: invalid, timeout, engine_error, engine_dead, shutdown",
            ["reason"],
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "tokenmill:time_to_first_token_seconds",
            "Arrival to first token",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = _TokenGapHistogram(
            "tokenmill:inter_token_latency_seconds", "Time between output tokens", _TOKEN_GAP_BUCKETS
        )
        self.registry.register(self.inter_token_latency)
        self.e2e_latency = Histogram(
            "tokenmill:e2e_request_latency_seconds",
            "Arrival to finish",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "tokenmill:request_queue_time_seconds",
            "Arrival to first scheduling",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def observe_finished(metrics: Metrics, output: RequestOutput) -> None:
    observe_all_finished(metrics, [output])


def observe_all_finished(metrics: Metrics, outputs: Sequence[RequestOutput]) -> None:
    """Record finished requests from the engine's own timestamps (exact whether or not they streamed):
    one inter-token observation per gap between consecutive tokens of each sequence. Counters are
    summed and gaps binned over all the outputs at once (a /predict batch finishes hundreds together)."""
    now = time.monotonic()
    prompt_tokens = generated = 0
    finish_reasons: collections.Counter[str] = collections.Counter()
    stamp_lists: list[list[float]] = []
    for output in outputs:
        prompt_tokens += len(output.prompt_token_ids)
        for completion in output.outputs:
            generated += len(completion.token_ids)
            finish_reasons[completion.finish_reason or "abort"] += 1
        times = output.times
        if times is None:
            continue
        metrics.e2e_latency.observe(now - times.arrival)
        if times.first_scheduled is not None:
            metrics.queue_time.observe(times.first_scheduled - times.arrival)
        if times.first_token is not None:
            metrics.time_to_first_token.observe(times.first_token - times.arrival)
        stamp_lists.extend(completion.token_times for completion in output.outputs)
    metrics.prompt_tokens.inc(prompt_tokens)
    metrics.generation_tokens.inc(generated)
    for reason, count in finish_reasons.items():
        metrics.request_success.labels(reason).inc(count)
    metrics.inter_token_latency.observe_gaps(stamp_lists)
