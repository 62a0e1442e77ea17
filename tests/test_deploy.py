"""The packaging files agree with the app: every path, port, metric and setting they name exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from tokenmill.config import ServerConfig
from tokenmill.config_env import SEED_ENV_ALIASES
from tokenmill.server.app import create_app
from tokenmill.server.grpc.server import STOP_GRACE_SECONDS
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
    tail += STOP_GRACE_SECONDS  # with deploy/k8s/grpc, the gRPC server's last answers
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


GRPC_OVERLAY = ROOT / "deploy" / "k8s" / "grpc"


def test_base_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())["resources"]
    manifests = {p.name for p in (ROOT / "deploy" / "k8s").glob("*.yaml")}
    assert set(listed) == manifests - {"kustomization.yaml", "prometheus-adapter-rules.yaml"}


def test_grpc_overlay_serves_and_probes_the_grpc_port() -> None:
    from tokenmill.server.grpc.health import LIVENESS_SERVICE, READINESS_SERVICE

    overlay = yaml.safe_load((GRPC_OVERLAY / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../"]
    patches = [yaml.safe_load((GRPC_OVERLAY / patch["path"]).read_text()) for patch in overlay["patches"]]
    deployment = next(p for p in patches if p["kind"] == "Deployment")
    service = next(p for p in patches if p["kind"] == "Service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = int(next(e["value"] for e in container["env"] if e["name"] == "TOKENMILL_GRPC_PORT"))
    assert "grpc_port" in ServerConfig.model_fields
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "grpc"] == [port]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]
    probes = {name: container[name] for name in ("readinessProbe", "livenessProbe")}
    for probe in probes.values():  # the merged probe keeps one handler: the base's httpGet is removed
        assert "httpGet" in probe and probe["httpGet"] is None and probe["grpc"]["port"] == port
    assert probes["readinessProbe"]["grpc"]["service"] == READINESS_SERVICE
    assert probes["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE


def test_docker_grpc_requirements_are_the_grpc_extra() -> None:
    declared = re.search(r"^grpc = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared is not None
    extra = re.findall(r'"([^"]+)"', declared.group(1))
    lines = (ROOT / "requirements-docker-grpc.txt").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == extra
    assert re.search(r"^ARG WITH_GRPC=false$", (ROOT / "Dockerfile").read_text(), re.M)


MULTI_GPU_OVERLAY = ROOT / "deploy" / "k8s" / "multi-gpu"


def test_multi_gpu_overlay_asks_for_as_many_gpus_as_its_ranks_and_shared_memory() -> None:
    overlay = yaml.safe_load((MULTI_GPU_OVERLAY / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../"]
    (patch,) = [yaml.safe_load((MULTI_GPU_OVERLAY / p["path"]).read_text()) for p in overlay["patches"]]
    pod = patch["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = {name.removeprefix("TOKENMILL_").lower(): value for name, value in env.items()}
    config = ServerConfig(**settings)  # every variable is a setting, with a valid value
    gpus = config.tensor_parallel_size * config.data_parallel_size
    assert gpus == container["resources"]["limits"]["nvidia.com/gpu"] == 2
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount["mountPath"] == "/dev/shm" and volume["emptyDir"]["medium"] == "Memory"
