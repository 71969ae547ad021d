"""deploy/k8s agrees with Kubernetes' and KEDA's schemas and with the code.

Two layers, no cluster needed:
- Schemas: kubeconform (built with `go install` through the Go module proxy) validates every resource,
  strictly (no field the schema does not name), against JSON schemas built offline from Kubernetes'
  own OpenAPI document and KEDA's CRDs, both taken from their Go modules (shared/infra/tools.py). A tool
  or schema build that fails fails the test, with the reason.
- Consistency: every service has a Deployment, Service and PodDisruptionBudget; probes are native gRPC
  probes on the port its ConfigMap sets; every ConfigMap key is a settings field the service reads and
  every value parses; secret files are mounted from the Secrets; KEDA's kafka triggers name the consumer
  group and topics the service's code really subscribes with (its app is built from the ConfigMap's
  settings and its broker's subscribers read), which shared/topics.py lists it as consuming.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic_settings import BaseSettings

from shared.infra.process import InfraError
from shared.infra.tools import SCHEMA_TEMPLATE, kubeconform, kubeconform_schemas
from shared.settings import ServiceSettings
from shared.topics import BY_NAME
from tests.unit.test_compose import (
    REPO_ROOT,
    dockerfile_stages,
    env_names,
    service_packages,
    service_settings,
    stage_chain,
)

BASE_DIR = REPO_ROOT / "deploy" / "k8s" / "base"
SECRETS_MOUNT = "/etc/llmops/secrets"
COMMON_CONFIGMAP = "llmops-common"
# Metadata keys of KEDA's kafka scaler (keda.sh/docs/scalers/apache-kafka) that these manifests may use:
# the CRD types trigger metadata as a free string map, so the schema cannot catch a misspelt key.
KAFKA_TRIGGER_KEYS = frozenset(
    {
        "bootstrapServers",
        "consumerGroup",
        "topic",
        "lagThreshold",
        "activationLagThreshold",
        "offsetResetPolicy",
        "allowIdleConsumers",
        "excludePersistentLag",
        "limitToPartitionsWithLag",
        "partitionLimitation",
        "scaleToZeroOnInvalidOffset",
        "version",
    }
)

Doc = dict[str, Any]


# --- loading -------------------------------------------------------------------------------------------


def kustomization() -> Doc:
    loaded = yaml.safe_load((BASE_DIR / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def resource_files() -> list[Path]:
    return [BASE_DIR / name for name in kustomization()["resources"]]


@cache
def documents() -> tuple[Doc, ...]:
    docs: list[Doc] = []
    for path in resource_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
                docs.append(doc)
    return tuple(docs)


def find(kind: str, name: str | None = None) -> list[Doc]:
    return [
        doc
        for doc in documents()
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(kind: str, name: str) -> Doc:
    found = find(kind, name)
    assert len(found) == 1, f"expected one {kind} {name!r} in deploy/k8s/base, found {len(found)}"
    return found[0]


def container(service: str) -> Doc:
    containers = one("Deployment", service)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{service}: one container per pod"
    result: Doc = containers[0]
    return result


def configmap_names(service: str) -> list[str]:
    names = [
        source["configMapRef"]["name"]
        for source in container(service).get("envFrom", [])
        if "configMapRef" in source
    ]
    assert not [source for source in container(service).get("envFrom", []) if "secretRef" in source], (
        f"{service}: secrets are mounted as files, never put in the environment"
    )
    return names


def pod_env(service: str) -> dict[str, str]:
    """The LLMOPS_* environment of the service's container: its ConfigMaps in envFrom order (later wins)."""
    env: dict[str, str] = {}
    for name in configmap_names(service):
        env.update({key: str(value) for key, value in (one("ConfigMap", name).get("data") or {}).items()})
    for item in container(service).get("env", []):
        env[item["name"]] = str(item.get("value", ""))
    return env


def prefix(service: str) -> str:
    return str(service_settings(service).model_config.get("env_prefix") or "")


# --- settings ------------------------------------------------------------------------------------------


def settings_env_names(settings: type[BaseSettings]) -> set[str]:
    """Names the class reads, with those of its nested settings (kafka, triton, weaviate, tenants), which
    read their own prefixes through their default factories: test_compose's env_names, recursively."""
    names = env_names(settings)
    for info in settings.model_fields.values():
        for kind in (info.annotation, *get_args(info.annotation)):
            if inspect.isclass(kind) and issubclass(kind, BaseSettings):
                names |= settings_env_names(kind)
    return names


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for key in list(os.environ):
        if key.startswith("LLMOPS_"):
            monkeypatch.delenv(key)
    yield monkeypatch


def settings_from_pod_env(
    service: str, monkeypatch: pytest.MonkeyPatch, secrets_dir: Path
) -> ServiceSettings:
    """The service's settings as its pod reads them; the secret files it names are written from the
    Secret templates into `secrets_dir` (the pod's SECRETS_MOUNT), since the app may read them at once."""
    for secret in find("Secret"):
        for key, value in (secret.get("stringData") or {}).items():
            (secrets_dir / key).write_text(str(value))
    for key, value in pod_env(service).items():
        in_secret = key.endswith("_FILE") and value.startswith(SECRETS_MOUNT + "/")
        monkeypatch.setenv(key, str(secrets_dir / Path(value).name) if in_secret else value)
    return service_settings(service)()


def durable_subscriptions(service: str, settings: ServiceSettings) -> dict[str, str]:
    """topic -> consumer group of the subscribers the service's app registers in its own group (the
    gateway's per-replica reply groups are not durable and not listed). Building the app does no I/O."""
    app = importlib.import_module(f"services.{service}.app").create_app(settings)
    subscribed: dict[str, str] = {}
    for subscriber in app.broker.subscribers:
        group = getattr(subscriber, "group_id", None)
        if group != settings.group_id:
            continue
        for topic in subscriber.topics:
            subscribed[str(getattr(topic, "name", topic))] = group
    return subscribed


# --- schema validation ---------------------------------------------------------------------------------


def run_kubeconform(paths: list[Path]) -> Doc:
    try:
        binary = kubeconform()
        schemas = kubeconform_schemas()
    except InfraError as exc:
        pytest.fail(f"cannot build kubeconform or its schemas (Go module proxy, `go` on PATH): {exc}")
    proc = subprocess.run(
        [
            str(binary),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-schema-location",
            f"{schemas}/{SCHEMA_TEMPLATE}",
            *(str(path) for path in paths),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        report: Doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"kubeconform gave no JSON report (exit {proc.returncode}): {proc.stdout}{proc.stderr}")
    report["returncode"] = proc.returncode
    return report


def test_kubeconform_validates_every_resource_strictly() -> None:
    report = run_kubeconform(resource_files())
    problems = [
        f"{item['filename']}: {item['kind']} {item['name']}: {item['msg']}"
        for item in report.get("resources") or []
        if item["status"] != "statusValid"
    ]
    assert not problems, "kubeconform:\n" + "\n".join(problems)
    summary = report["summary"]
    assert report["returncode"] == 0
    assert summary["valid"] == len(documents()), f"every resource must be validated, none skipped: {summary}"
    assert summary["skipped"] == summary["errors"] == summary["invalid"] == 0, summary


def test_kubeconform_rejects_an_unknown_field_in_every_kind(tmp_path: Path) -> None:
    """The schemas are strict and really loaded for each kind used (Kubernetes' and KEDA's alike)."""
    firsts: dict[str, Doc] = {}
    for doc in documents():
        firsts.setdefault(doc["kind"], doc)
    assert {"Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "HorizontalPodAutoscaler"} <= set(
        firsts
    )
    paths = []
    for kind, doc in firsts.items():
        broken = json.loads(json.dumps(doc))
        broken["unexpectedField"] = True
        if isinstance(broken.get("spec"), dict):
            broken["spec"]["unexpectedField"] = True
        path = tmp_path / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(broken))
        paths.append(path)
    report = run_kubeconform(paths)
    statuses = {item["kind"]: item["status"] for item in report.get("resources") or []}
    assert statuses == dict.fromkeys(firsts, "statusInvalid"), statuses


# --- layout --------------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_image() -> None:
    listed = {path.name for path in resource_files()}
    on_disk = {path.name for path in BASE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, f"kustomization.yaml resources differ from the files: {listed ^ on_disk}"
    namespace = kustomization().get("namespace")
    assert namespace and find("Namespace", namespace), "the kustomization's namespace is created"
    images = {image["name"] for image in kustomization().get("images", [])}
    deployed = {container(service)["image"].split(":")[0] for service in service_packages()}
    assert images == deployed, (
        f"kustomization images {sorted(images)} != Deployment images {sorted(deployed)}"
    )


def test_every_resource_is_labelled_and_unique() -> None:
    seen: set[tuple[str, str]] = set()
    for doc in documents():
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{key} defined twice"
        seen.add(key)
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "llmops", f"{key} lacks app.kubernetes.io/part-of"


@pytest.mark.parametrize("service", sorted(service_packages()))
def test_deployment_service_and_pdb(service: str) -> None:
    deployment = one("Deployment", service)
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items(), (
        f"{service}: selector does not match its pods"
    )

    # The image is the service's target of deploy/docker/Dockerfile.
    image = container(service)["image"]
    assert image.split(":")[0].rsplit("/", 1)[-1] == service and service in dockerfile_stages(), image

    ports = {port["name"]: port["containerPort"] for port in container(service)["ports"]}
    env, p = pod_env(service), prefix(service)
    assert ports == {"grpc": int(env[f"{p}GRPC_PORT"]), "metrics": int(env[f"{p}METRICS_PORT"])}, ports
    assert env[f"{p}GRPC_HOST"] == env[f"{p}METRICS_HOST"] == "0.0.0.0", f"{service} must listen on 0.0.0.0"

    svc = one("Service", service)
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    exposed = {port["name"]: (port["port"], port["targetPort"]) for port in svc["spec"]["ports"]}
    assert exposed == {"grpc": (ports["grpc"], "grpc"), "metrics": (ports["metrics"], "metrics")}, exposed

    pdb = one("PodDisruptionBudget", service)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    replicas = deployment["spec"].get("replicas", 1)
    if "minAvailable" in pdb["spec"]:
        assert int(pdb["spec"]["minAvailable"]) < replicas, f"{service}: the PDB would block every drain"


@pytest.mark.parametrize("service", sorted(service_packages()))
def test_probes_are_native_grpc_on_the_configured_port(service: str) -> None:
    grpc_port = int(pod_env(service)[f"{prefix(service)}GRPC_PORT"])
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container(service).get(probe_name)
        assert probe, f"{service} has no {probe_name}"
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{service}: {probe_name}"
        assert probe["grpc"]["port"] == grpc_port, f"{service}: {probe_name} is not on gRPC :{grpc_port}"
        assert probe["grpc"].get("service", "") == "", "the server's overall health (service '')"

    annotations = one("Deployment", service)["spec"]["template"]["metadata"].get("annotations") or {}
    metrics_port = pod_env(service)[f"{prefix(service)}METRICS_PORT"]
    assert annotations.get("prometheus.io/scrape") == "true", f"{service}: no scrape annotation"
    assert annotations.get("prometheus.io/port") == metrics_port
    assert annotations.get("prometheus.io/path") == "/metrics"


@pytest.mark.parametrize("service", sorted(service_packages()))
def test_pods_are_unprivileged_with_a_read_only_root(service: str) -> None:
    pod = one("Deployment", service)["spec"]["template"]["spec"]
    image_user = next(arg for stage in stage_chain(service) for arg in stage.args("USER")).split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == image_user, "the Dockerfile's USER"
    assert pod.get("automountServiceAccountToken") is False, "the services never call the API server"
    security = container(service)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container(service)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    # HOME=/app in the image: the model cache (~/.cache/llmops) and /tmp need writable volumes.
    mounts = {mount["mountPath"] for mount in container(service)["volumeMounts"]}
    assert {"/tmp", "/app/.cache"} <= mounts, mounts
    assert pod["terminationGracePeriodSeconds"] > float(
        pod_env(service).get(f"{prefix(service)}GRACEFUL_TIMEOUT_S", "15")
    ), "the pod must outlive the service's drain"


# --- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(service_packages()))
def test_configmap_keys_are_settings_fields_the_service_reads(service: str) -> None:
    names = configmap_names(service)
    assert names == [COMMON_CONFIGMAP, f"llmops-{service}"], names
    read = settings_env_names(service_settings(service))
    own = one("ConfigMap", f"llmops-{service}").get("data") or {}
    unknown = sorted(key for key in own if key not in read)
    assert not unknown, (
        f"llmops-{service} sets {unknown}, which {service} does not read (it reads {sorted(read)})"
    )
    common = one("ConfigMap", COMMON_CONFIGMAP).get("data") or {}
    overlap = sorted(set(own) & set(common))
    assert not overlap, f"{overlap} set in both {COMMON_CONFIGMAP} and llmops-{service}"
    for key, value in own.items():
        assert isinstance(value, str), f"llmops-{service}: {key} must be a string (quote it)"


def test_every_common_key_is_read_by_a_service_that_mounts_it() -> None:
    data = one("ConfigMap", COMMON_CONFIGMAP).get("data") or {}
    assert data, f"{COMMON_CONFIGMAP} is empty"
    readers = [service for service in service_packages() if COMMON_CONFIGMAP in configmap_names(service)]
    read = set().union(*(settings_env_names(service_settings(service)) for service in readers))
    unknown = sorted(key for key in data if key not in read)
    assert not unknown, f"{COMMON_CONFIGMAP} sets {unknown}, which no service mounting it reads"


@pytest.mark.parametrize("service", sorted(service_packages()))
def test_configuration_parses_and_secret_files_are_mounted(
    service: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A value the settings cannot parse fails here (pydantic validation).
    settings = settings_from_pod_env(service, clean_env, tmp_path)
    assert settings.grpc_port == int(pod_env(service)[f"{prefix(service)}GRPC_PORT"])

    pod = one("Deployment", service)["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = {mount["mountPath"]: mount for mount in container(service)["volumeMounts"]}
    for key, value in pod_env(service).items():
        if not key.endswith("_FILE") or not value:
            continue
        path = Path(value)
        assert str(path.parent) == SECRETS_MOUNT, f"{service}: {key}={value} is not under {SECRETS_MOUNT}"
        mount = mounts.get(SECRETS_MOUNT)
        volume = volumes[mount["name"]] if mount else {}
        assert "secret" in volume, (
            f"{service}: {key} names a file, but no Secret is mounted at {SECRETS_MOUNT}"
        )
        assert mount and mount.get("readOnly") is True, f"{service}: mount the Secret read-only"
        secret = one("Secret", volume["secret"]["secretName"])
        keys = set(secret.get("stringData") or {}) | set(secret.get("data") or {})
        assert path.name in keys, f"{service}: Secret {secret['metadata']['name']} has no key {path.name}"


# --- scaling -------------------------------------------------------------------------------------------


def scaled_object(service: str) -> Doc | None:
    found = [doc for doc in find("ScaledObject") if doc["spec"]["scaleTargetRef"]["name"] == service]
    assert len(found) <= 1, f"{service} has several ScaledObjects"
    return found[0] if found else None


# Consumers that run exactly one replica and so have no autoscaler.
SINGLETONS = {"finetune": "one scheduler owns the job queue and its SQLite store"}


@pytest.mark.parametrize("service", sorted(service_packages()))
def test_kafka_consumers_scale_on_their_real_group_and_topics(
    service: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_from_pod_env(service, clean_env, tmp_path)
    subscribed = durable_subscriptions(service, settings)
    scaler = scaled_object(service)
    hpas = [
        doc for doc in find("HorizontalPodAutoscaler") if doc["spec"]["scaleTargetRef"]["name"] == service
    ]
    if not subscribed:
        assert scaler is None, f"{service} consumes in no durable group: KEDA has no lag to scale on"
        return
    if service in SINGLETONS:
        deployment = one("Deployment", service)
        assert scaler is None and not hpas, f"{service} runs one replica: {SINGLETONS[service]}"
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate", "never two at once, even in a rollout"
        for name in subscribed:
            assert name in BY_NAME and service in BY_NAME[name].consumers, (
                f"shared/topics.py does not list {service} as a consumer of {name}"
            )
        return
    assert scaler is not None, f"{service} consumes {sorted(subscribed)} but has no KEDA ScaledObject"
    assert not hpas, f"{service}: KEDA owns the HPA of a ScaledObject's target; remove the extra HPA"
    spec = scaler["spec"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert spec["minReplicaCount"] >= 1, "the service also serves gRPC: never scale it to zero"
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]

    topics: dict[str, Doc] = {}
    for trigger in spec["triggers"]:
        assert trigger["type"] == "kafka", trigger
        meta = trigger["metadata"]
        assert set(meta) <= KAFKA_TRIGGER_KEYS, (
            f"unknown kafka trigger keys: {set(meta) - KAFKA_TRIGGER_KEYS}"
        )
        assert meta["consumerGroup"] == settings.group_id, f"{service}: the group is {settings.group_id}"
        assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
        assert int(meta["lagThreshold"]) > 0
        assert meta["topic"] not in topics, f"{service}: two triggers for {meta['topic']}"
        topics[meta["topic"]] = meta
    assert set(topics) == set(subscribed), (
        f"{service}: triggers on {sorted(topics)}, but the service consumes {sorted(subscribed)}"
    )
    for name in topics:
        assert name in BY_NAME and service in BY_NAME[name].consumers, (
            f"shared/topics.py does not list {service} as a consumer of {name}"
        )
    most_partitions = max(BY_NAME[name].partitions for name in topics)
    assert spec["maxReplicaCount"] <= most_partitions, "replicas beyond the partitions would idle"


def test_gateway_scales_on_cpu() -> None:
    assert scaled_object("gateway") is None
    hpa = one("HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    metrics = [
        metric["resource"]["name"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Resource"
    ]
    assert metrics == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2, "the public API keeps a spare replica"
    cpu = container("gateway")["resources"]["requests"]["cpu"]
    assert cpu, "CPU utilisation needs a CPU request"


def monitor_replica_problems(docs: tuple[Doc, ...]) -> list[str]:
    """With embedded chdb (no ClickHouse server URL) one process owns the data path: one replica,
    replaced with Recreate, and no autoscaler allowed to add more."""
    configmap = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "llmops-monitor"
    )
    if (configmap.get("data") or {}).get("LLMOPS_MONITOR_CLICKHOUSE_URL", ""):
        return []
    problems = []
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "monitor")
    if deployment["spec"].get("replicas", 1) != 1:
        problems.append("embedded chdb: the monitor Deployment must have replicas: 1")
    if deployment["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.append(
            "embedded chdb: a rolling update would start a second owner of the path; use Recreate"
        )
    for doc in docs:
        if doc["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}:
            spec = doc["spec"]
            if (
                spec["scaleTargetRef"]["name"] == "monitor"
                and max(spec.get("maxReplicaCount", 1), spec.get("maxReplicas", 1)) > 1
            ):
                problems.append(f"embedded chdb: {doc['kind']} {doc['metadata']['name']} may add replicas")
    return problems


def test_monitor_runs_one_replica_unless_a_clickhouse_server_is_configured() -> None:
    assert monitor_replica_problems(documents()) == []
    # The rule bites: the same manifests without the server URL are refused.
    embedded = json.loads(json.dumps(documents()))
    for doc in embedded:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "llmops-monitor":
            doc["data"].pop("LLMOPS_MONITOR_CLICKHOUSE_URL", None)
    problems = monitor_replica_problems(tuple(embedded))
    assert any("Recreate" in problem for problem in problems), problems
    assert any("ScaledObject" in problem for problem in problems), problems
