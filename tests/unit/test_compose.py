"""docker-compose.yml and deploy/docker/Dockerfile agree with the code.

There is no Docker engine where unit tests run, so these files are checked by parsing them: every
service image is a Dockerfile target that starts a real service package, every LLMOPS_* variable
names a settings field the service reads, and ports, health checks and dependencies line up.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from shared.settings import KafkaSettings, ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = "deploy/docker/Dockerfile"
SERVICES_DIR = REPO_ROOT / "services"
PYTHON_BASE_IMAGE = "python:3.11-slim"

# Packages under services/ that have a __main__.py but are tools, not deployed services.
NOT_DEPLOYED = frozenset({"cli"})

# Infrastructure comes from these official images (compose service -> image name without tag).
OFFICIAL_IMAGES = {
    "kafka": "apache/kafka",
    "weaviate": "semitechnologies/weaviate",
    "clickhouse": "clickhouse/clickhouse-server",
    "triton": "nvcr.io/nvidia/tritonserver",
    "grafana": "grafana/grafana",
}

# LLMOPS_* variables compose already sets that no settings class defines yet, with the service that
# sets them: read by the service once its issue lands. Remove an entry when its field exists.
PENDING_ENV_KEYS: dict[str, str] = {}

# Anything that would put a compiler or package-manager install into a service image.
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|yum|dnf)\s+(-\S+\s+)*(install|add)\b|build-essential|\bgcc\b")


# --- compose -------------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), f"{COMPOSE_FILE} is not a YAML mapping"
    return loaded


def compose_services() -> dict[str, dict[str, Any]]:
    services = compose().get("services")
    assert isinstance(services, dict) and services, "docker-compose.yml has no services"
    return services


def built_services() -> dict[str, dict[str, Any]]:
    """Compose services built from this repository (they have `build`), by compose name."""
    return {name: spec for name, spec in compose_services().items() if "build" in spec}


def target_of(spec: dict[str, Any]) -> str:
    build = spec["build"]
    assert isinstance(build, dict), "build must be a mapping with dockerfile and target"
    target = build.get("target")
    assert isinstance(target, str) and target, f"build has no target: {build}"
    return target


def environment(spec: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either the mapping or the list form."""
    env = spec.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}
    assert isinstance(env, dict), f"environment must be a mapping or a list, not {type(env).__name__}"
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def host_ports(spec: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, host port) of each published port, short syntax or long syntax."""
    published: list[tuple[str, int]] = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, dict):
            published.append((str(entry.get("host_ip", "0.0.0.0")), int(entry["published"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 1:  # container port only: Docker picks a free host port
            continue
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        published.append((address, int(parts[-2])))
    return published


def image_name_and_tag(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    return (name, tag) if name and "/" not in tag else (image, "latest")


# --- Dockerfile ----------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


@cache
def dockerfile_stages() -> dict[str, Stage]:
    """Stages by name, with instructions joined across line continuations and global ARGs resolved."""
    lines: list[str] = []
    pending = ""
    for raw in (REPO_ROOT / DOCKERFILE).read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"

    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, f"cannot parse FROM line: {line}"
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m[1] or m[2], m[0]), match[1])
            name = match[2] or str(len(stages))
            assert name not in stages, f"two stages are named {name}"
            current = stages[name] = Stage(name=name, base=base)
        elif current is None:
            assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
            arg_name, _, default = rest.partition("=")
            global_args[arg_name] = default
        else:
            current.instructions.append((keyword, rest))
    return stages


def stage_chain(name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    stages = dockerfile_stages()
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def root_image(name: str) -> str:
    return stage_chain(name)[-1].base


def stage_env(name: str) -> dict[str, str]:
    """ENV of a stage as its container sees it (inherited from its FROM stages, nearest wins)."""
    env: dict[str, str] = {}
    for stage in reversed(stage_chain(name)):
        for arg in stage.args("ENV"):
            for token in shlex.split(arg):
                key, sep, value = token.partition("=")
                assert sep, f"use ENV KEY=VALUE, not the legacy form: ENV {arg}"
                env[key] = value
    return env


# --- settings ------------------------------------------------------------------------------------------


def service_packages() -> set[str]:
    """Deployable services: packages under services/ that `python -m` can run."""
    return {
        path.parent.name
        for path in SERVICES_DIR.glob("*/__main__.py")
        if path.parent.name not in NOT_DEPLOYED
    }


def env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variable names pydantic-settings reads for the class's fields."""
    prefix = settings.model_config.get("env_prefix") or ""
    names: set[str] = set()
    for field_name, info in settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):  # an alias replaces prefix + name
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, AliasPath):
            names.add(str(alias.path[0]).upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def settings_classes(module_name: str) -> list[type[BaseSettings]]:
    module = importlib.import_module(module_name)
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__
    ]


def service_settings(service: str) -> type[ServiceSettings]:
    found = [
        cls for cls in settings_classes(f"services.{service}.settings") if issubclass(cls, ServiceSettings)
    ]
    assert len(found) == 1, (
        f"services/{service}/settings.py must define one ServiceSettings subclass: {found}"
    )
    return found[0]


def env_names_read_by(service: str) -> set[str]:
    """Every LLMOPS_* name the service reads: its ServiceSettings subclass, KafkaSettings, and any
    other shared or service-local settings class (e.g. a connection class with its own prefix)."""
    classes: list[type[BaseSettings]] = [service_settings(service), KafkaSettings]
    for module_name in ("shared.settings", f"services.{service}.settings"):
        classes += [cls for cls in settings_classes(module_name) if not issubclass(cls, ServiceSettings)]
    return set().union(*(env_names(cls) for cls in classes))


def env_names_of_all_settings() -> set[str]:
    names: set[str] = set()
    for service in service_packages():
        names |= env_names_read_by(service)
    return names


# --- tests: compose ------------------------------------------------------------------------------------


def test_every_built_service_is_a_dockerfile_target_of_a_service_package() -> None:
    built = built_services()
    assert built, "no service in docker-compose.yml is built from this repository"
    for name, spec in built.items():
        build = spec["build"]
        assert build.get("dockerfile") == DOCKERFILE, f"{name}: build.dockerfile must be {DOCKERFILE}"
        assert (REPO_ROOT / str(build.get("context", "."))).resolve() == REPO_ROOT, (
            f"{name}: build.context must be the repository root"
        )
        target = target_of(spec)
        assert (SERVICES_DIR / target / "__main__.py").is_file(), (
            f"{name}: target {target!r} is not a package services/{target}/__main__.py"
        )


def test_every_service_package_is_in_compose() -> None:
    packages = service_packages()
    assert len(packages) >= 6, f"expected the six service packages, found {sorted(packages)}"
    targets = {target_of(spec) for spec in built_services().values()}
    assert packages <= targets, (
        f"service packages missing from docker-compose.yml: {sorted(packages - targets)}"
    )


def test_infrastructure_uses_the_official_images() -> None:
    services = compose_services()
    for name, image_name in OFFICIAL_IMAGES.items():
        assert name in services, f"docker-compose.yml has no {name} service"
        image = services[name].get("image", "")
        assert isinstance(image, str) and image.startswith(image_name + ":"), (
            f"{name} must use the official image {image_name}:<tag>, not {image!r}"
        )
        assert "build" not in services[name], f"{name} must run the official image, not build one"


def test_image_versions_match_the_local_stack() -> None:
    """`make run` and the compose stack run the same Kafka and Weaviate releases."""
    # Loaded at run time: the infra modules pull in the whole bus, which this test does not type-check.
    kafka_version = str(importlib.import_module("shared.infra.kafka").KAFKA_VERSION)
    weaviate_version = str(importlib.import_module("shared.infra.weaviate").WEAVIATE_VERSION)
    services = compose_services()
    assert image_name_and_tag(services["kafka"]["image"])[1] == kafka_version
    assert image_name_and_tag(services["weaviate"]["image"])[1] == weaviate_version.removeprefix("v")


@pytest.mark.parametrize("service", sorted(service_packages()))
def test_environment_names_settings_fields(service: str) -> None:
    specs = [spec for spec in built_services().values() if target_of(spec) == service]
    assert specs, f"{service} is not built in docker-compose.yml"
    known = env_names_read_by(service)
    for spec in specs:
        keys = [key for key in environment(spec) if key.upper().startswith("LLMOPS_")]
        assert keys, f"{service} sets no LLMOPS_* variables"
        for key in keys:
            if key.upper() in known:
                continue
            assert PENDING_ENV_KEYS.get(key) == service, (
                f"{service}: {key} is not a field of {service_settings(service).__name__} or KafkaSettings "
                f"(known: {sorted(known)})"
            )


def test_pending_keys_are_not_settings_fields_yet() -> None:
    """The allow-list only holds names no settings class reads yet; a field, once added, is checked."""
    defined = env_names_of_all_settings()
    assert "LLMOPS_KAFKA_BOOTSTRAP_SERVERS" in defined  # the mapping itself works
    stale = sorted(key for key in PENDING_ENV_KEYS if key in defined)
    assert not stale, f"remove from PENDING_ENV_KEYS, a settings class now defines them: {stale}"


def test_infrastructure_takes_no_llmops_settings() -> None:
    for name, spec in compose_services().items():
        if "build" not in spec:
            assert not [key for key in environment(spec) if key.startswith("LLMOPS_")], name


def test_services_bind_all_interfaces_on_fixed_ports() -> None:
    grpc_ports: dict[int, str] = {}
    metrics_ports: dict[int, str] = {}
    for name, spec in built_services().items():
        target, env = target_of(spec), environment(spec)
        prefix = service_settings(target).model_config.get("env_prefix") or ""
        assert prefix == f"LLMOPS_{target.upper()}_"
        assert env.get(f"{prefix}GRPC_HOST") == "0.0.0.0", f"{name}: gRPC must listen on 0.0.0.0"
        assert env.get(f"{prefix}METRICS_HOST") == "0.0.0.0", f"{name}: metrics must listen on 0.0.0.0"
        grpc_port, metrics_port = int(env[f"{prefix}GRPC_PORT"]), int(env[f"{prefix}METRICS_PORT"])
        assert grpc_port > 0 and metrics_port > 0, f"{name}: ports must be fixed, not 0"
        assert grpc_ports.setdefault(grpc_port, name) == name, f"gRPC port {grpc_port} used twice"
        assert metrics_ports.setdefault(metrics_port, name) == name, f"metrics port {metrics_port} used twice"


def test_kafka_is_a_single_kraft_node_that_services_reach() -> None:
    kafka = compose_services()["kafka"]
    env = environment(kafka)
    assert env["KAFKA_NODE_ID"] and "controller" in env["KAFKA_PROCESS_ROLES"]
    assert "CONTROLLER://" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    factors = {key: value for key, value in env.items() if key.endswith("REPLICATION_FACTOR")}
    assert "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR" in factors
    assert "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR" in factors
    assert set(factors.values()) == {"1"}, f"a single node needs replication factor 1: {factors}"
    assert "kafka-broker-api-versions.sh" in json.dumps(kafka["healthcheck"]["test"])

    advertised = {listener.split("://", 1)[1] for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, spec in built_services().items():
        servers = environment(spec).get("LLMOPS_KAFKA_BOOTSTRAP_SERVERS", "")
        assert servers, f"{name} does not set LLMOPS_KAFKA_BOOTSTRAP_SERVERS"
        assert set(servers.split(",")) <= advertised, f"{name}: {servers} is not an advertised listener"


def test_hosts_in_settings_are_compose_services() -> None:
    services = compose_services()
    endpoint = re.compile(r"^(?:[a-z]+://)?([A-Za-z][\w.-]*):(\d+)")
    checked = 0
    for name, spec in built_services().items():
        for key, value in environment(spec).items():
            match = endpoint.match(value)
            if key.startswith("LLMOPS_") and match:
                assert match[1] in services, f"{name}: {key}={value} names no compose service"
                checked += 1
    assert checked >= len(built_services()), "every service should at least reach Kafka"


def test_dependencies_exist_and_health_conditions_have_health_checks() -> None:
    services = compose_services()
    for name, spec in services.items():
        depends_on = spec.get("depends_on") or {}
        conditions = (
            dict.fromkeys(depends_on, "service_started")
            if isinstance(depends_on, list)
            else {dep: (cfg or {}).get("condition", "service_started") for dep, cfg in depends_on.items()}
        )
        if "build" in spec:
            assert "kafka" in conditions, f"{name} must wait for Kafka"
        for dependency, condition in conditions.items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
                )


def test_service_health_checks_probe_their_own_grpc_port() -> None:
    for name, spec in built_services().items():
        prefix = service_settings(target_of(spec)).model_config.get("env_prefix") or ""
        port = environment(spec)[f"{prefix}GRPC_PORT"]
        probe = json.dumps(spec["healthcheck"]["test"])
        assert "grpc_health" in probe and f":{port}'" in probe, (
            f"{name}: health check must probe gRPC :{port}"
        )


def test_published_host_ports_are_unique_and_gateway_is_public() -> None:
    seen: dict[int, str] = {}
    for name, spec in compose_services().items():
        for _, port in host_ports(spec):
            assert seen.setdefault(port, name) == name, (
                f"host port {port} published by {seen[port]} and {name}"
            )
    gateways = [name for name, spec in built_services().items() if target_of(spec) == "gateway"]
    assert gateways and seen.get(50051) in gateways, "the gateway must publish port 50051 to the host"


def test_triton_serves_the_repository_models() -> None:
    triton = compose_services()["triton"]
    command = triton["command"]
    args = shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]
    assert args[0] == "tritonserver"
    assert "--model-repository=/models" in args and "--model-control-mode=explicit" in args
    mounts = {str(volume).split(":")[1]: str(volume).split(":")[0] for volume in triton["volumes"]}
    source = REPO_ROOT / mounts["/models"]
    assert source == REPO_ROOT / "deploy" / "triton" / "models"
    models = [arg.split("=", 1)[1] for arg in args if arg.startswith("--load-model=")]
    assert models, "Triton must load at least one model"
    for model in models:
        assert (source / model / "config.pbtxt").is_file(), f"no model {model} in {source}"


def test_grafana_provisions_the_monitor_dashboard_on_the_compose_clickhouse() -> None:
    grafana = compose_services()["grafana"]
    mounts = {
        str(volume).split(":")[1]: REPO_ROOT / str(volume).split(":")[0]
        for volume in grafana["volumes"]
        if str(volume).startswith("./")
    }
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == REPO_ROOT / "deploy" / "grafana" / "provisioning"

    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.yaml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    plugins = environment(grafana)["GF_INSTALL_PLUGINS"].split(",")
    assert datasources, "no datasource is provisioned"
    for source in datasources:
        assert source["type"] in plugins, f"datasource plugin {source['type']} is not installed"
        host, port = source["jsonData"]["host"], int(source["jsonData"]["port"])
        assert host in compose_services(), f"datasource host {host} is no compose service"
        assert str(port) in [str(p) for p in compose_services()[host]["expose"]]
    assert "clickhouse" in (grafana.get("depends_on") or {})

    # The dashboard provider reads the folder deploy/grafana is mounted at, which holds the dashboards.
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.yaml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    assert providers, "no dashboard provider is provisioned"
    for provider in providers:
        folder = mounts[provider["options"]["path"]]
        assert sorted(folder.glob("*.json")), f"{folder} holds no dashboard"
    # The monitor writes to the same server the dashboards read.
    monitor_url = environment(compose_services()["monitor"])["LLMOPS_MONITOR_CLICKHOUSE_URL"]
    assert any(monitor_url.startswith(f"http://{s['jsonData']['host']}:") for s in datasources)


# --- tests: Dockerfile ---------------------------------------------------------------------------------


def test_compose_targets_are_dockerfile_stages() -> None:
    stages = dockerfile_stages()
    for name, spec in built_services().items():
        assert target_of(spec) in stages, f"{name}: no `FROM ... AS {target_of(spec)}` in {DOCKERFILE}"


def test_base_stage_installs_the_project_without_dev_extras() -> None:
    stages = dockerfile_stages()
    assert "base" in stages, "the Dockerfile needs a base stage"
    assert root_image("base") == PYTHON_BASE_IMAGE
    copied = " ".join(arg for stage in stages.values() for arg in stage.args("COPY"))
    for source in ("pyproject.toml", "gen/", "shared/", "services/"):
        assert source in copied, f"the project build does not COPY {source}"
    installs = " ".join(arg for stage in stage_chain("base") for arg in stage.args("RUN"))
    assert "pip install" in installs
    assert "[dev]" not in installs and "-e " not in installs, "images install neither dev extras nor editable"


@pytest.mark.parametrize("service", sorted(service_packages()))
def test_service_stage(service: str) -> None:
    stages = dockerfile_stages()
    assert service in stages, f"no `FROM ... AS {service}` in {DOCKERFILE}"
    chain = stage_chain(service)
    assert "base" in [stage.name for stage in chain], f"{service} must build FROM base"
    assert root_image(service) == PYTHON_BASE_IMAGE

    entrypoints = stages[service].args("ENTRYPOINT")
    assert entrypoints, f"{service} has no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["python", "-m", f"services.{service}"]

    users = [arg for stage in chain for arg in stage.args("USER")]
    assert users, f"{service} runs as root: no USER"
    assert users[0].split(":")[0] not in {"root", "0"}, f"{service} runs as root"

    for stage in chain:
        for run in stage.args("RUN"):
            assert not BUILD_TOOLS.search(run), (
                f"{service} image gets build tools in stage {stage.name}: {run}"
            )

    # Exposed ports are the ones the service binds by default and the ones compose configures.
    exposed = {int(port.split("/")[0]) for arg in stages[service].args("EXPOSE") for port in arg.split()}
    prefix = service_settings(service).model_config.get("env_prefix") or ""
    image_env = stage_env(service)
    known = env_names_read_by(service)
    for key in image_env:
        if key.startswith("LLMOPS_"):
            assert key in known, f"{service} image sets {key}, which no settings field reads"
    for port_key in (f"{prefix}GRPC_PORT", f"{prefix}METRICS_PORT"):
        assert int(image_env[port_key]) in exposed, f"{service}: {port_key} is not EXPOSEd"
        for name, spec in built_services().items():
            if target_of(spec) == service:
                assert environment(spec)[port_key] == image_env[port_key], f"{name}: {port_key} differs"
    assert len(exposed) == 2, f"{service} should expose its gRPC and metrics ports only: {sorted(exposed)}"
