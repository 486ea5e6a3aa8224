"""The Kubernetes manifests of ``deploy/``: rendered by kustomize, valid, agreeing with Settings.

Built-in kinds are validated against the Kubernetes OpenAPI schemas bundled in the
``kubernetes-validate`` wheel (offline: the schemas are package data, ``$ref``s resolve
locally), in strict mode so an unknown or misspelt field fails. KEDA's ScaledObject and
TriggerAuthentication are custom resources with no bundled schema: they are checked against
the subset of KEDA's CRD structure written here, and against the worker Deployment and the
settings they must agree with.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

from streams.settings import Settings
from tests.deploy.manifests import (
    KUSTOMIZATIONS,
    SETTING_ENV_NAMES,
    find,
    one,
    pod_specs,
)

#: Oldest Kubernetes minor the manifests target, and the newest the wheel knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
#: Kinds that are custom resources (KEDA), validated by the tests below instead.
CUSTOM_KINDS = frozenset({"ScaledObject", "TriggerAuthentication"})
WORKER = "mmc-worker"
WEB = "mmc-web"
PLACEHOLDER = "REPLACE-ME"

Docs = dict[str, list[dict[str, Any]]]


def config_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The data of the ``mmc-config`` ConfigMap."""
    return dict(one(docs, "ConfigMap", "mmc-config")["data"])


def settings_of(config: dict[str, str]) -> Settings:
    """Settings from ConfigMap data (strings, as a pod's environment has them).

    ``model_validate`` skips the settings sources, so MMC_* variables of the test process
    cannot leak in.
    """
    fields = {name.removeprefix("MMC_").lower(): value for name, value in config.items()}
    return Settings.model_validate(fields)


# --- schema validation ---------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_builtin_kinds_validate_against_kubernetes_schemas(rendered: Docs, kustomization: str, version: str) -> None:
    """Every built-in manifest passes strict schema validation for old and new Kubernetes."""
    docs = [doc for doc in rendered[kustomization] if doc["kind"] not in CUSTOM_KINDS]
    assert docs
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_a_misspelt_field(rendered: Docs) -> None:
    """The validator is not a no-op: a misspelt Deployment field fails it."""
    deployment = copy.deepcopy(one(rendered["base"], "Deployment", WORKER))
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_only_keda_kinds_lack_a_bundled_schema(rendered: Docs, kustomization: str) -> None:
    """Every kind the validator has no schema for is a KEDA kind checked below."""
    unknown = set()
    for doc in rendered[kustomization]:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
        except SchemaNotFoundError:
            unknown.add(doc["kind"])
        except ValidationError:
            pass  # reported by the validation test
    assert unknown <= CUSTOM_KINDS


# --- KEDA custom resources -----------------------------------------------------------------

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}},
}

#: The part of KEDA's ScaledObject CRD (keda.sh/v1alpha1) these manifests use: the spec's
#: field names, the required ones, and types - trigger metadata is map[string]string, so a
#: YAML number there (lagThreshold: 1000) is refused by the API server.
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "advanced": {"type": "object"},
                "fallback": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metadata": _STRING_MAP,
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

TRIGGER_AUTHENTICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "additionalProperties": False,
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}

#: KEDA's Kafka scaler spelling of the SASL mechanisms Settings accepts.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


def scaled_object(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "ScaledObject", WORKER)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_scaled_object_has_keda_structure(rendered: Docs, kustomization: str) -> None:
    """The ScaledObject and any TriggerAuthentication match KEDA's CRD structure."""
    jsonschema.validate(scaled_object(rendered[kustomization]), SCALED_OBJECT_SCHEMA)
    for auth in find(rendered[kustomization], "TriggerAuthentication"):
        jsonschema.validate(auth, TRIGGER_AUTHENTICATION_SCHEMA)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_scaled_object_scales_the_worker_on_submission_lag(rendered: Docs, kustomization: str) -> None:
    """KEDA targets the worker Deployment and reads the lag of the workers' group on submissions."""
    docs = rendered[kustomization]
    scaled = scaled_object(docs)
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"] == WORKER and target.get("kind", "Deployment") == "Deployment"
    assert one(docs, "Deployment", target["name"])

    settings = settings_of(config_of(docs))
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["topic"] == settings.topic("submissions")
    assert meta["consumerGroup"] == settings.consumer_group("submissions")
    assert meta["bootstrapServers"] == settings.kafka_bootstrap
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("offsetResetPolicy", "latest") == "earliest"


def test_base_scaled_object_uses_the_settings_defaults(rendered: Docs) -> None:
    """In the base, the trigger names the default topic and group of Settings."""
    meta = scaled_object(rendered["base"])["spec"]["triggers"][0]["metadata"]
    defaults = Settings()
    assert meta["topic"] == defaults.topic("submissions") == "mmc.submissions"
    assert meta["consumerGroup"] == defaults.consumer_group("submissions") == "mmc-stream-submissions"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_max_replicas_equal_partitions(rendered: Docs, kustomization: str) -> None:
    """maxReplicaCount = MMC_PARTITIONS: a worker beyond the partition count would idle."""
    docs = rendered[kustomization]
    spec = scaled_object(docs)["spec"]
    partitions = settings_of(config_of(docs)).partitions
    assert spec["maxReplicaCount"] == partitions
    assert 1 <= spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"]
    worker = one(docs, "Deployment", WORKER)
    assert worker["spec"].get("replicas", 1) <= partitions


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_scaler_security_matches_the_workers(rendered: Docs, kustomization: str) -> None:
    """KEDA connects the way the workers do: SASL mechanism, TLS and credentials agree."""
    docs = rendered[kustomization]
    settings = settings_of(config_of(docs))
    trigger = scaled_object(docs)["spec"]["triggers"][0]
    meta = trigger["metadata"]
    protocol = settings.kafka_security_protocol
    assert (meta.get("tls") == "enable") == (protocol in ("SSL", "SASL_SSL"))
    if protocol.startswith("SASL_"):
        assert meta.get("sasl") == KEDA_SASL[settings.kafka_sasl_mechanism]
        auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        assert refs["username"]["key"] == "MMC_KAFKA_SASL_USERNAME"
        assert refs["password"]["key"] == "MMC_KAFKA_SASL_PASSWORD"
        assert {refs["username"]["name"], refs["password"]["name"]} == {"mmc-secrets"}
    else:
        assert "sasl" not in meta and "authenticationRef" not in trigger


# --- workloads -----------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_containers_are_pinned_probed_sized_and_unprivileged(rendered: Docs, kustomization: str) -> None:
    """Every container: tagged image, probes, requests/limits, non-root, read-only root fs."""
    for name, pod in pod_specs(rendered[kustomization]):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest" and "/" not in tag, image
            assert {"livenessProbe", "readinessProbe"} <= container.keys(), name
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), name
            assert "memory" in resources["limits"], name
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            # A read-only root needs writable mounts where the process writes: /tmp and the
            # working directory (Faust's data directory).
            mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert {"/tmp", "/var/lib/mmc"} <= mounts, name


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_worker_resources_come_from_the_benchmark(rendered: Docs, kustomization: str) -> None:
    """Workers request 2 CPU / 4Gi and may use 8Gi (a 10,000 x 6,720 round close holds ~1.5 GB)."""
    (container,) = one(rendered[kustomization], "Deployment", WORKER)["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["worker"]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert container["resources"]["limits"] == {"memory": "8Gi"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_probes_use_the_web_port_of_the_settings(rendered: Docs, kustomization: str) -> None:
    """Probes hit the container port the pod's web server opens: a worker's MMC_WORKER_WEB_PORT
    (with its web server enabled), `mmc web`'s MMC_WEB_PORT."""
    docs = rendered[kustomization]
    settings = settings_of(config_of(docs))
    assert settings.web_enabled and settings.web_host == "0.0.0.0"
    port_of = {WORKER: settings.worker_web_port, WEB: settings.web_port}
    assert len(pod_specs(docs)) == len(port_of)
    for name, pod in pod_specs(docs):
        for container in pod["containers"]:
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            assert ports == {"http": port_of[name]}, name
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["port"] == "http", (name, probe)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pdb_and_service_select_their_pods(rendered: Docs, kustomization: str) -> None:
    """The PodDisruptionBudget selects the worker pods; the Service selects the web pods."""
    docs = rendered[kustomization]
    worker_labels = one(docs, "Deployment", WORKER)["spec"]["template"]["metadata"]["labels"]
    web_labels = one(docs, "Deployment", WEB)["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget", WORKER)["spec"]
    assert pdb["selector"]["matchLabels"].items() <= worker_labels.items()
    assert pdb["maxUnavailable"] == 1
    service = one(docs, "Service", WEB)["spec"]
    assert service["selector"].items() <= web_labels.items()
    assert not service["selector"].items() <= worker_labels.items()
    assert {port["targetPort"] for port in service["ports"]} == {"http"}


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_mmc_name_is_a_setting(rendered: Docs, kustomization: str) -> None:
    """ConfigMap and Secret keys and container env names are all MMC_* fields of Settings."""
    docs = rendered[kustomization]
    names: set[str] = set(config_of(docs))
    for secret in find(docs, "Secret"):
        names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for _, pod in pod_specs(docs):
        for container in pod["containers"]:
            names |= {env["name"] for env in container.get("env", [])}
    for auth in find(docs, "TriggerAuthentication"):
        names |= {ref["key"] for ref in auth["spec"]["secretTargetRef"] if ref["name"] == "mmc-secrets"}
    assert names, "no configuration found"
    assert names - SETTING_ENV_NAMES == set()


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_config_map_holds_valid_non_secret_settings(rendered: Docs, kustomization: str) -> None:
    """The ConfigMap loads as Settings and carries no secret setting."""
    config = config_of(rendered[kustomization])
    settings_of(config)  # raises on an invalid value
    secret_fields = {f"MMC_{name.upper()}" for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)}
    assert secret_fields and not secret_fields & config.keys()


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_read_the_config_map_and_the_secret(rendered: Docs, kustomization: str) -> None:
    """Every mmc container takes its settings from mmc-config and mmc-secrets through envFrom."""
    for name, pod in pod_specs(rendered[kustomization]):
        for container in pod["containers"]:
            sources = {(kind, ref["name"]) for source in container["envFrom"] for kind, ref in source.items()}
            assert sources == {("configMapRef", "mmc-config"), ("secretRef", "mmc-secrets")}, name


def test_base_secret_is_a_marked_template(rendered: Docs) -> None:
    """The base Secret holds the SASL and Redis passwords as clearly marked placeholders."""
    secret = one(rendered["base"], "Secret", "mmc-secrets")
    values = secret["stringData"]
    assert {"MMC_KAFKA_SASL_PASSWORD", "MMC_REDIS_PASSWORD"} <= values.keys()
    assert all(value.startswith(PLACEHOLDER) for value in values.values())


def test_overlay_ships_no_secret(rendered: Docs) -> None:
    """The example overlay drops the template: applying it never overwrites the real Secret."""
    docs = rendered["overlays/example"]
    assert find(docs, "Secret") == []
    assert PLACEHOLDER not in repr(docs)


def test_base_is_namespace_agnostic(rendered: Docs) -> None:
    """No object of the base names a namespace."""
    assert [doc["metadata"]["name"] for doc in rendered["base"] if "namespace" in doc["metadata"]] == []


def test_overlay_sets_namespace_image_and_sasl_ssl(rendered: Docs) -> None:
    """The overlay: one namespace, the registry image, SASL_SSL with its CA mounted."""
    docs = rendered["overlays/example"]
    (namespace,) = find(docs, "Namespace")
    name = namespace["metadata"]["name"]
    assert all(doc["metadata"]["namespace"] == name for doc in docs if doc["kind"] != "Namespace")

    settings = settings_of(config_of(docs))
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.redis_url.startswith("rediss://")
    assert one(docs, "Deployment", WEB)["spec"]["replicas"] == 3
    for workload, pod in pod_specs(docs):
        (container,) = pod["containers"]
        assert container["image"].startswith("registry.example.com/"), workload
        mounts = [mount["mountPath"] for mount in container["volumeMounts"]]
        for path in (settings.kafka_ssl_cafile, settings.redis_ssl_ca_certs):
            assert path and any(path.startswith(mount + "/") for mount in mounts), (workload, path)
