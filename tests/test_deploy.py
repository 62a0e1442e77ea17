"""The packaging files agree with the app: every path, port, metric and setting they name exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from tokenmill.config import SEED_ENV_ALIASES, ServerConfig
from tokenmill.server.app import create_app
from tokenmill.server.launcher import ABANDON_GRACE_SECONDS, CLOSE_GRACE_SECONDS
from tokenmill.server.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = [*sorted((ROOT / "deploy" / "k8s").glob("*.yaml")), ROOT / "deploy" / "docker-compose.yml"]


def documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def walk(node: object) -> Iterator[dict]:
    """Every mapping in a YAML tree."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_manifests_parse_and_cover_the_kinds() -> None:
    kinds = {doc.get("kind") for doc in documents()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds


def test_probe_paths_exist_in_the_app() -> None:
    routes = set(create_app(ServerConfig()).openapi()["paths"])
    probes = [m["path"] for doc in documents() for m in walk(doc) if "path" in m and "port" in m]
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text()
    probes += re.findall(r"http://127\.0\.0\.1:8000(/[\w/]+)", compose)
    assert probes and set(probes) <= routes, set(probes) - routes
    assert {"/v2/health/ready", "/v2/health/live"} <= set(probes)


def test_ports_agree_with_the_server_default() -> None:
    port = ServerConfig.model_fields["port"].default
    assert port == 8000
    container_ports = [m["containerPort"] for doc in documents() for m in walk(doc) if "containerPort" in m]
    target_ports = [m["targetPort"] for doc in documents() for m in walk(doc) if "targetPort" in m]
    assert container_ports == [port] and target_ports == [port]
    assert f"EXPOSE {port}" in (ROOT / "Dockerfile").read_text()
    assert f'"{port}:{port}"' in (ROOT / "deploy" / "docker-compose.yml").read_text()


def test_grace_period_covers_pre_stop_and_drain() -> None:
    deployment = next(doc for doc in documents() if doc.get("kind") == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    drain = int(next(e["value"] for e in container["env"] if e["name"] == "TOKENMILL_SHUTDOWN_TIMEOUT"))
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    tail = ABANDON_GRACE_SECONDS + CLOSE_GRACE_SECONDS  # 503s to what is left, then the exit
    assert pod["terminationGracePeriodSeconds"] >= drain + pause + tail


def test_autoscaler_metric_is_exported() -> None:
    exported = Metrics(lambda: None).render().decode()
    assert "tokenmill:num_requests_waiting" in exported
    rules = yaml.safe_load((ROOT / "deploy" / "k8s" / "prometheus-adapter-rules.yaml").read_text())
    hpa = next(doc for doc in documents() if doc.get("kind") == "HorizontalPodAutoscaler")
    served = rules["rules"]["custom"][0]["name"]["as"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == served


def test_every_setting_named_in_the_packaging_exists() -> None:
    text = (ROOT / "Dockerfile").read_text() + "".join(path.read_text() for path in MANIFESTS)
    fields = {f"TOKENMILL_{name.upper()}" for name in ServerConfig.model_fields}
    named = set(re.findall(r"\b(TOKENMILL_[A-Z_]+)\b", text))
    assert named and named <= fields, named - fields
    assert set(re.findall(r"\b(BATCH_MODE|BATCH_SIZE|MAX_SEQ_LEN)\b", text)) <= SEED_ENV_ALIASES.keys()


def test_dockerfile_keeps_the_judge_contract() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^CMD \["python", "-m", "tokenmill", "serve"\]$', dockerfile, re.M)
    for arg in ("MODEL_ID", "MODEL_REVISION", "MODEL_SOURCE", "PIP_INDEX_URL"):
        assert re.search(rf"^ARG {arg}=", dockerfile, re.M), arg
    for offline in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"):
        assert offline in dockerfile
    requirements = (ROOT / "requirements-docker.txt").read_text().lower()
    assert not re.search(r"^(torch|triton)\b", requirements, re.M)  # never replace the base image's
