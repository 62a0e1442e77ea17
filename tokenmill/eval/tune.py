"""`python -m tokenmill tune`: search serving knobs for the highest judge speed whose accuracy stays at
least `threshold + margin` on a local QA set.

Coordinate search: start from each knob's first value; for each knob in turn try its other values with
the rest held at the best so far, and keep a value when it is faster while still accurate enough (or,
while nothing is accurate enough yet, more accurate). Knobs the server reads at start (batch size, KV
dtype) restart it; the others are sent as /predict overrides. Bounded by a trial count and a time budget.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenmill.eval.datasets import QAItem
from tokenmill.eval.judge import JudgeOptions, evaluate
from tokenmill.eval.local_server import LocalServer

# knob -> (environment variable of the server, whether changing it needs a restart)
KNOBS: dict[str, tuple[str, bool]] = {
    "max_num_seqs": ("TOKENMILL_MAX_NUM_SEQS", True),
    "kv_cache_dtype": ("TOKENMILL_KV_CACHE_DTYPE", True),
    "max_new_tokens": ("TOKENMILL_DEFAULT_MAX_TOKENS", False),
    "system_prompt": ("TOKENMILL_SYSTEM_PROMPT", False),
    "stop": ("TOKENMILL_PREDICT_STOP", False),
}


@dataclass
class Trial:
    settings: dict[str, Any]
    speed: float
    accuracy: float
    feasible: bool
    seconds: float


def _env_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list) else str(value)


def _server_env(model: str | None, device: str, settings: dict[str, Any]) -> dict[str, str]:
    """The environment of a server with the given restart-level settings."""
    env = {"TOKENMILL_DEVICE": device, **({"TOKENMILL_MODEL": model} if model else {})}
    for knob, value in settings.items():
        name, restart = KNOBS[knob]
        if restart and value is not None:
            env[name] = _env_value(value)
    return env


@dataclass
class TuneOptions:
    """Where the tuner's servers run (`model` None = the embedded default) and when the search stops."""

    out_dir: Path
    model: str | None = None
    device: str = "auto"
    port: int | None = None
    threshold: float = 0.35
    margin: float = 0.02
    max_trials: int = 12
    time_budget: float = 1800.0


def tune(
    items: list[QAItem], space: dict[str, list[Any]], options: TuneOptions
) -> tuple[Trial | None, list[Trial]]:
    out_dir, model, threshold = options.out_dir, options.model, options.threshold
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    current = {knob: values[0] for knob, values in space.items()}
    trials: list[Trial] = []
    best: Trial | None = None
    server: LocalServer | None = None
    server_settings: dict[str, Any] | None = None
    candidates = [dict(current)] + [
        {**current, knob: value} for knob, values in space.items() for value in values[1:]
    ]
    try:
        while (
            candidates
            and len(trials) < options.max_trials
            and time.monotonic() - started < options.time_budget
        ):
            settings = _rebase(candidates.pop(0), best, space)
            restart_part = {k: v for k, v in settings.items() if KNOBS[k][1]}
            if server is None or restart_part != server_settings:
                if server is not None:
                    server.stop()
                env = _server_env(model, options.device, restart_part)
                server = LocalServer(env, options.port, out_dir / "server.log")
                server_settings = restart_part
            trial_started = time.monotonic()
            judge = JudgeOptions(threshold=threshold, overrides=_overrides(settings))
            report, _ = evaluate(server.url, items, "tune", judge, check_server=server.check_alive)
            feasible = report.accuracy >= threshold + options.margin
            seconds = round(time.monotonic() - trial_started, 2)
            trial = Trial(settings, report.speed, report.accuracy, feasible, seconds)
            trials.append(trial)
            if _better(trial, best):
                best = trial
    finally:
        if server is not None:
            server.stop()
    _write(best, trials, out_dir, model)
    return best, trials


def _rebase(candidate: dict[str, Any], best: Trial | None, space: dict[str, list[Any]]) -> dict[str, Any]:
    """A candidate changes one knob; the others follow the best trial found so far."""
    if best is None:
        return candidate
    changed = [k for k in space if candidate[k] != space[k][0]]
    return {**best.settings, **{k: candidate[k] for k in changed}}


def _better(trial: Trial, best: Trial | None) -> bool:
    if best is None:
        return True
    if trial.feasible != best.feasible:
        return trial.feasible
    return trial.speed > best.speed if trial.feasible else trial.accuracy > best.accuracy


def _overrides(settings: dict[str, Any]) -> dict[str, Any]:
    mapping = {"max_new_tokens": "max_new_tokens", "system_prompt": "system_prompt", "stop": "stop"}
    return {field: settings[knob] for knob, field in mapping.items() if settings.get(knob) not in (None, [])}


def _write(best: Trial | None, trials: list[Trial], out_dir: Path, model: str | None) -> None:
    rows = [
        "| # | settings | speed (chars/s) | accuracy | meets floor | seconds |",
        "| --- | --- | ---: | ---: | --- | ---: |",
    ]
    for number, t in enumerate(trials, start=1):
        settings = json.dumps(t.settings, ensure_ascii=False)
        meets = "yes" if t.feasible else "no"
        rows.append(
            f"| {number} | `{settings}` | {t.speed:,.1f} | {t.accuracy:.4f} | {meets} | {t.seconds} |"
        )
    (out_dir / "trials.md").write_text("\n".join(rows) + "\n")
    (out_dir / "trials.json").write_text(
        json.dumps([t.__dict__ for t in trials], ensure_ascii=False, indent=2) + "\n"
    )
    verdict = "meets" if best and best.feasible else "does NOT meet"
    lines = [f"# tokenmill tune: {len(trials)} trials; the best {verdict} the accuracy floor"]
    if model:
        lines.append(f"TOKENMILL_MODEL={model}")
    for knob, value in (best.settings if best else {}).items():
        if value is not None:
            lines.append(f"{KNOBS[knob][0]}={_env_value(value)}")
    (out_dir / "best.env").write_text("\n".join(lines) + "\n")
