"""The Kubernetes manifests in deploy/kubernetes, read (PyYAML) and checked against the code:
every environment variable is a real setting with a valid value, ports and probes match what
the processes serve, every Secret, ConfigMap and volume referred to exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError as PydanticValidationError

from agentmesh.agent import AgentSettings
from agentmesh.config import Settings
from agentmesh.orchestrator.cache._connect import parse
from agentmesh.security import CertFiles

FOLDER = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
WORKLOADS = ("Deployment", "StatefulSet")

Doc = dict[str, Any]


def _documents() -> list[Doc]:
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    docs: list[Doc] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((FOLDER / name).read_text()) if d]
    return docs


DOCS = _documents()


def _named(kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] == kind}


def _containers() -> Iterator[tuple[Doc, Doc]]:
    for doc in DOCS:
        if doc["kind"] in WORKLOADS:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def _ours(container: Doc) -> bool:
    return str(container["image"]).startswith("agentmesh")


def _literal_env(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _container_port(container: Doc, name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _settings_of(prefix: str, model: type[Settings] | type[AgentSettings]) -> set[str]:
    return {prefix + name.upper() for name in model.model_fields}


def _secrets_created() -> dict[str, set[str]]:
    """Secret name → keys, as deploy/kubernetes/secrets.sh creates them."""
    script = (FOLDER / "secrets.sh").read_text()
    created: dict[str, set[str]] = {}
    helper = re.search(r"certs_secret\(\) \{(.*?)\n\}", script, re.S)
    assert helper is not None
    helper_keys = set(re.findall(r"--from-file=([\w.-]+)=", helper.group(1)))
    for name in re.findall(r"^certs_secret (\S+) ", script, re.M):
        created[name] = helper_keys
    for name, body in re.findall(
        r"kubectl create secret generic (agentmesh-[\w-]+) \\\n(.*?)--dry-run", script, re.S
    ):
        created[name] = set(re.findall(r"--from-(?:literal|file)=([\w.-]+)=", body))
    return created


def test_the_manifests_hold_orchestrators_redis_with_sentinel_postgres_and_agents() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in DOCS}
    assert ("StatefulSet", "agentmesh-orchestrator") in kinds
    assert ("StatefulSet", "redis") in kinds
    assert ("StatefulSet", "postgres") in kinds
    agents = [n for k, n in kinds if k == "Deployment" and n.startswith("agent-")]
    assert sorted(agents) == ["agent-analyst", "agent-splitter", "agent-writer"]
    orchestrators = _named("StatefulSet")["agentmesh-orchestrator"]
    assert orchestrators["spec"]["replicas"] >= 2


@pytest.mark.parametrize(
    ("workload", "container"),
    [(w, c) for w, c in _containers() if _ours(c)],
    ids=lambda x: x["name"] if "image" in x else x["metadata"]["name"],
)
def test_every_environment_variable_is_a_setting_with_a_valid_value(
    workload: Doc, container: Doc
) -> None:
    names = {e["name"] for e in container["env"]}
    agent = any(n.startswith("AGENTMESH_AGENT_") for n in names)
    model: type[Settings] | type[AgentSettings] = AgentSettings if agent else Settings
    known = _settings_of("AGENTMESH_AGENT_" if agent else "AGENTMESH_", model)
    assert names <= known, names - known
    values = {
        k.removeprefix("AGENTMESH_AGENT_" if agent else "AGENTMESH_").lower(): v
        for k, v in _literal_env(container).items()
    }
    try:
        model.model_validate(values)
    except PydanticValidationError as exc:  # pragma: no cover - the failure message
        pytest.fail(f"{workload['metadata']['name']}: {exc}")


def _orchestrator() -> tuple[Doc, Doc]:
    workload = _named("StatefulSet")["agentmesh-orchestrator"]
    return workload, workload["spec"]["template"]["spec"]["containers"][0]


def test_the_orchestrators_ports_probes_and_metrics_annotation_match_what_it_serves() -> None:
    workload, container = _orchestrator()
    env = _literal_env(container)
    grpc_port = _port(env["AGENTMESH_LISTEN"])
    metrics_port = _port(env["AGENTMESH_METRICS_LISTEN"])
    assert _container_port(container, "grpc") == grpc_port
    assert _container_port(container, "metrics") == metrics_port
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    for probe in ("readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        # gRPC health over mTLS (agentmesh health), on the port the orchestrator listens on,
        # with a certificate that the pod has.
        assert command[:2] == ["agentmesh", "health"]
        assert _port(_option(command, "--address")) == grpc_port
        _has_certificate(workload, container, command)
    services = [
        s
        for s in _named("Service").values()
        if s["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
    ]
    assert services
    for service in services:
        (port,) = service["spec"]["ports"]
        assert port["port"] == grpc_port
        assert port["targetPort"] == "grpc"


def _has_certificate(workload: Doc, container: Doc, command: list[str]) -> None:
    certs_dir = Path(_option(command, "--certs-dir"))
    files = CertFiles.of(certs_dir, _option(command, "--kind"), _option(command, "--name"))
    mounted = _mounted_files(workload, container)
    assert {files.ca, files.cert, files.key} <= mounted, (files, mounted)


def _mounted_files(workload: Doc, container: Doc) -> set[Path]:
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    files = set()
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is not None:
            files |= {Path(mount["mountPath"]) / item["path"] for item in secret["items"]}
    return files


def test_the_orchestrator_reads_its_certificate_from_where_the_secret_is_mounted() -> None:
    workload, container = _orchestrator()
    env = _literal_env(container)
    settings = Settings.model_validate(
        {"certs_dir": env["AGENTMESH_CERTS_DIR"], "cert_name": env["AGENTMESH_CERT_NAME"]}
    )
    files = CertFiles.of(settings.certs_dir, "orchestrator", settings.cert_name)
    assert {files.ca, files.cert, files.key} <= _mounted_files(workload, container)


def test_the_redis_url_names_the_sentinels_of_the_manifests() -> None:
    _, container = _orchestrator()
    target = parse(_literal_env(container)["AGENTMESH_REDIS_URL"])
    redis = _named("StatefulSet")["redis"]
    sentinel = next(
        c for c in redis["spec"]["template"]["spec"]["containers"] if c["name"] == "sentinel"
    )
    replicas = redis["spec"]["replicas"]
    assert target.kind == "sentinel"
    assert {host for host, _ in target.hosts} == {f"redis-{i}.redis" for i in range(replicas)}
    assert {port for _, port in target.hosts} == {_container_port(sentinel, "sentinel")}
    scripts = _named("ConfigMap")["redis-sentinel"]["data"]
    assert f"sentinel monitor {target.service} " in scripts["sentinel.sh"]
    assert _named("Service")["redis"]["spec"]["clusterIP"] == "None"


def _agents() -> Iterator[tuple[Doc, Doc]]:
    for workload, container in _containers():
        if _ours(container) and workload["metadata"]["name"].startswith("agent-"):
            yield workload, container


def test_each_agent_serves_registers_and_is_probed_where_the_manifests_say() -> None:
    _, orchestrator = _orchestrator()
    orchestrators = _named("StatefulSet")["agentmesh-orchestrator"]
    grpc_port = _port(_literal_env(orchestrator)["AGENTMESH_LISTEN"])
    replica_names = {
        f"agentmesh-orchestrator-{i}.agentmesh-orchestrator"
        for i in range(orchestrators["spec"]["replicas"])
    }
    for workload, container in _agents():
        settings = AgentSettings.model_validate(
            {
                k.removeprefix("AGENTMESH_AGENT_").lower(): v
                for k, v in _literal_env(container).items()
            }
        )
        name = workload["metadata"]["name"]
        assert workload["spec"]["replicas"] == 1  # an agent's name is its identity
        listen = _port(settings.listen)
        assert _container_port(container, "grpc") == listen
        host, _, port = settings.advertise.rpartition(":")
        service = _named("Service")[host]
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
        (service_port,) = service["spec"]["ports"]
        assert (service_port["port"], service_port["targetPort"]) == (int(port), "grpc")
        assert {a.rpartition(":")[0] for a in settings.orchestrators} == replica_names, name
        assert {_port(a) for a in settings.orchestrators} == {grpc_port}
        for probe in ("readinessProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["agentmesh", "health"]
            assert _port(_option(command, "--address")) == listen
            assert (_option(command, "--kind"), _option(command, "--name")) == (
                "agent",
                settings.name,
            )
            _has_certificate(workload, container, command)
        files = CertFiles.of(settings.certs_dir, "agent", settings.name)
        assert {files.ca, files.cert, files.key} <= _mounted_files(workload, container)


def test_every_secret_configmap_and_volume_referred_to_exists() -> None:
    created = _secrets_created()
    config_maps = _named("ConfigMap")
    for workload in (d for d in DOCS if d["kind"] in WORKLOADS):
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        mounted = set()
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, mount
                mounted.add(mount["name"])
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["key"] in created.get(ref["name"], set()), ref
        assert set(volumes) <= mounted, set(volumes) - mounted  # no volume left unused
        for volume in volumes.values():
            if "secret" in volume:
                secret = volume["secret"]
                keys = {item["key"] for item in secret["items"]}
                assert keys <= created.get(secret["secretName"], set()), secret
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
    # And each script the redis pods run is in their ConfigMap.
    redis = _named("StatefulSet")["redis"]
    scripts = config_maps["redis-sentinel"]["data"]
    for container in redis["spec"]["template"]["spec"]["containers"]:
        script = container["command"][-1].removeprefix("/scripts/")
        assert script in scripts
        assert "/scripts/primary.sh" in scripts[script]
