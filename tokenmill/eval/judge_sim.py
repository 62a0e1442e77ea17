"""`python -m tokenmill judge-sim`: a dress rehearsal of the judge's run.

The server starts exactly as the image's CMD would: `python -m tokenmill serve` with the Dockerfile's
ENV, then the env file's settings, with the hubs forced offline. Then the judge: health within its
limit, every question in one POST /predict within its limit, speed and accuracy the judge's way, and the
server's peak memory. Pass means all three limits held and accuracy reached the threshold.
"""

from __future__ import annotations

import re
import subprocess
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tokenmill.eval.datasets import QAItem
from tokenmill.eval.judge import JudgeOptions, evaluate
from tokenmill.eval.local_server import LocalServer, ServerDied

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MODELSCOPE_OFFLINE": "1",
}


@dataclass
class SimReport:
    passed: bool
    healthy_within_limit: bool
    answered_within_limit: bool
    accurate_enough: bool
    health_wait_s: float
    post_seconds: float
    speed: float
    accuracy: float
    cjk_accuracy: float
    items: int
    missing: int
    peak_host_memory_gib: float | None
    peak_gpu_memory_gib: float | None
    environment: dict[str, str]
    failure: str = ""


def dockerfile_env(path: Path) -> dict[str, str]:
    """The KEY=VALUE pairs of the Dockerfile's ENV instructions (line continuations joined)."""
    text = re.sub(r"\\\s*\n", " ", path.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line))
    return env


def env_file(path: Path) -> dict[str, str]:
    """Docker's --env-file format: KEY=VALUE lines, # comments."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value
    return env


class _PeakMemory:
    """Samples the server's resident memory (and its GPU memory where nvidia-smi answers)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.host = 0
        self.gpu = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                self.host = max(self.host, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024)
            except (OSError, AttributeError):
                pass
            self.gpu = max(self.gpu, _gpu_memory(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _gpu_memory(pid: int) -> int:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(
        int(mib) << 20
        for p, mib in (row.split(", ") for row in out.splitlines() if ", " in row)
        if int(p) == pid
    )


@dataclass
class SimOptions:
    """What the rehearsal runs: the image's Dockerfile ENV, then `settings_file` (KEY=VALUE lines, e.g.
    tune's best.env), then `overrides`; and the judge's limits."""

    dockerfile: Path
    settings_file: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    gpu_memory: str | None = None
    threshold: float = 0.35
    health_limit: float = 420.0
    predict_limit: float = 360.0
    log: Path | None = None


def simulate(items: list[QAItem], options: SimOptions) -> SimReport:
    environment = server_environment(options)
    failure = _missing_model(environment)
    if failure:
        return _failed(items, environment, failure, None)
    server = LocalServer(environment, log=options.log, append=False)
    environment = server.env
    memory = _PeakMemory(server.process.pid)
    report = None
    judge = JudgeOptions(
        threshold=options.threshold,
        health_timeout=options.health_limit,
        predict_timeout=options.predict_limit,
    )
    try:
        report, _ = evaluate(server.url, items, "judge-sim", judge, check_server=server.check_alive)
    except ServerDied as exc:
        failure = str(exc)
    except (TimeoutError, OSError, ValueError, httpx.HTTPError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
        if server.process.poll() is not None:
            failure += f"\nthe server exited; its last log lines:\n{server.log_tail()}"
    finally:
        memory.stop()
        server.stop()
    if report is None:
        return _failed(items, environment, failure or "the server never answered", memory)
    post = report.runs[-1]["post_seconds"]
    checks = (
        report.health_wait_s <= options.health_limit,
        post <= options.predict_limit and report.missing == 0,
        report.accuracy >= options.threshold,
    )
    return SimReport(
        passed=all(checks),
        healthy_within_limit=checks[0],
        answered_within_limit=checks[1],
        accurate_enough=checks[2],
        health_wait_s=round(report.health_wait_s, 2),
        post_seconds=post,
        speed=report.speed,
        accuracy=report.accuracy,
        cjk_accuracy=report.cjk_accuracy,
        items=report.items,
        missing=report.missing,
        peak_host_memory_gib=_gib(memory.host),
        peak_gpu_memory_gib=_gib(memory.gpu),
        environment=environment,
        failure="" if all(checks) else "limits or accuracy not met",
    )


def server_environment(options: SimOptions) -> dict[str, str]:
    """The server's environment, in the order the image's run would set it, with the hubs offline."""
    environment = dockerfile_env(options.dockerfile)
    if options.settings_file:
        environment.update(env_file(options.settings_file))
    environment.update(options.overrides)
    if options.gpu_memory:
        environment["TOKENMILL_MAX_GPU_MEMORY"] = options.gpu_memory
    environment.update(OFFLINE)
    return environment


def _missing_model(environment: dict[str, str]) -> str:
    """Why the image's model cannot be served on this machine ('' when it can be tried): its path
    (/app/model in the Dockerfile) exists only inside the image."""
    model = environment.get("TOKENMILL_MODEL", "")
    if not model or model.startswith("random:") or Path(model).expanduser().exists():
        return ""
    return (
        f"the model path {model} does not exist on this machine (the Dockerfile's model path exists only "
        "inside the image): pass --model with a local model directory or .gguf file "
        "(or --model random:qwen3-tiny to rehearse the mechanics only)"
    )


def _failed(
    items: list[QAItem], environment: dict[str, str], failure: str, memory: _PeakMemory | None
) -> SimReport:
    host, gpu = (memory.host, memory.gpu) if memory else (0, 0)
    return SimReport(False, False, False, False, 0, 0, 0, 0, 0, len(items), len(items), _gib(host), _gib(gpu),
                     environment, failure)  # fmt: skip


def _gib(value: int) -> float | None:
    return round(value / (1 << 30), 3) if value else None


def as_dict(report: SimReport) -> dict[str, Any]:
    return asdict(report)
