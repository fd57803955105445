"""The Helm chart ``charts/tq``, rendered offline with the Helm SDK (helm-python-sdk: Helm's Go SDK
through ctypes, no helm binary) for every values file.

What is checked: ``helm lint --strict``; every built-in object against the Kubernetes schema of
the targeted version (kubernetes-validate); every QueueConfig and the peering object against
their CRDs' schemas, and ServiceMonitor, PrometheusRule, ScaledObject and TriggerAuthentication
against the vendored CRDs of prometheus-operator and KEDA (unknown fields refused); values.schema.json
refusing typos and wrong types; the family map agreeing with the registry; the toggles
(ServiceMonitor, KEDA, bundled databases); security contexts, probes and drain time; the
rendered PrometheusRule passing ``promtool check rules``.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from support.chart import CHART, ENVS, NAMESPACE, RELEASE, Doc, deep_merge, env_values, render_docs
from tq.registry import families

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra)")

VALUES_FILES = ("values.yaml", "values-dev.yaml", "values-staging.yaml", "values-prod.yaml")
# The Kubernetes version the chart targets (Chart.yaml kubeVersion allows it and later).
KUBE_VERSION = "1.31.0"
BUILTIN_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "rbac.authorization.k8s.io/v1"}
BUILTIN_GROUPS |= {"networking.k8s.io/v1"}
CUSTOM_KINDS = {"QueueConfig", "ClusterKopfPeering", "ServiceMonitor", "PrometheusRule", "ScaledObject"}
CUSTOM_KINDS |= {"JobSchedule"}  # checked against its CRD in tests/chart/test_jobschedules.py
CUSTOM_KINDS |= {"TriggerAuthentication"}


def render(env: str = "default", **overrides: Any) -> list[Doc]:
    """The chart's objects as `helm template` would print them, for ``env`` plus ``overrides``."""
    return render_values(deep_merge(env_values(env), overrides))


def render_values(values: dict[str, Any], namespace: str = NAMESPACE) -> list[Doc]:
    """render() for values that set ``env`` too (a name render() keeps for the environment)."""
    return render_docs(values, namespace=namespace)


def notes(env: str) -> str:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(env_values(env), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {env: render(env) for env in ENVS}


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def component(name: str) -> str:
    return f"{RELEASE}-{name}"


# ---------------------------------------------------------------- lint, Kubernetes, CRD schemas


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_strict(values_file: str) -> None:
    values = yaml.safe_load((CHART / values_file).read_text()) if values_file != "values.yaml" else {}
    report = helm.lint(CHART, values=values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert problems == []


@pytest.mark.parametrize("env", ENVS)
def test_builtin_objects_are_valid_kubernetes(rendered: dict[str, list[Doc]], env: str) -> None:
    docs = rendered[env]
    builtin = [d for d in docs if d["apiVersion"] in BUILTIN_GROUPS]
    assert {d["kind"] for d in docs if d["apiVersion"] not in BUILTIN_GROUPS} <= CUSTOM_KINDS
    assert len(builtin) >= 2 * len(families()) + 6
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}") from None


def test_kubernetes_validation_catches_a_broken_object(rendered: dict[str, list[Doc]]) -> None:
    deployment = copy.deepcopy(of_kind(rendered["default"], "Deployment")[component("messaging")])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


VENDORED_CRDS = Path(__file__).resolve().parent / "schemas"
# The CRDs of prometheus-operator and KEDA, their openAPIV3Schema only (tests/schemas/crd-*.json,
# each naming its source): no cluster, and no network to fetch them at test time.
FOREIGN_KINDS = ("ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication")


def strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as `kubectl apply --validate=strict` does (the API
    server would otherwise prune a misspelt field silently), unless the schema keeps them."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if isinstance(out.get("pattern"), str) and "(?i)" in out["pattern"]:  # Go's inline flag, anywhere
        out["pattern"] = "(?i)" + out["pattern"].replace("(?i)", "")
    if (
        isinstance(out.get("properties"), dict)
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def strict_object(schema: dict[str, Any]) -> dict[str, Any]:
    """strict() for a whole object: the fields every object has are allowed without being listed."""
    out: dict[str, Any] = strict(schema)
    common = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    out["properties"] = {**common, **out.get("properties", {})}
    return out


def foreign_crd(kind: str) -> tuple[str, dict[str, Any]]:
    loaded = json.loads((VENDORED_CRDS / f"crd-{kind.lower()}.json").read_text())
    return loaded["apiVersion"], strict_object(loaded["openAPIV3Schema"])


@pytest.mark.parametrize("env", ENVS)
def test_custom_objects_match_their_crds(rendered: dict[str, list[Doc]], env: str) -> None:
    for kind in FOREIGN_KINDS:
        api_version, schema = foreign_crd(kind)
        for doc in (d for d in rendered[env] if d["kind"] == kind):
            assert doc["apiVersion"] == api_version
            try:
                jsonschema.validate(doc, schema)
            except jsonschema.ValidationError as exc:
                raise AssertionError(f"{kind}/{doc['metadata']['name']}: {exc.message}") from None


def test_every_custom_kind_is_rendered_somewhere(rendered: dict[str, list[Doc]]) -> None:
    kinds = {d["kind"] for docs in rendered.values() for d in docs}
    assert kinds >= CUSTOM_KINDS  # so that the CRD checks above cover each of them


def test_crd_check_catches_a_misspelt_field(rendered: dict[str, list[Doc]]) -> None:
    _, schema = foreign_crd("ServiceMonitor")
    (monitor,) = copy.deepcopy(of_kind(rendered["prod"], "ServiceMonitor")).values()
    monitor["spec"]["endpoints"][0]["honorLabel"] = monitor["spec"]["endpoints"][0].pop("honorLabels")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, schema)
    _, schema = foreign_crd("ScaledObject")
    (scaled, *_) = copy.deepcopy(of_kind(rendered["staging"], "ScaledObject")).values()
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, schema)


def crd_schema(file: str) -> tuple[str, str, dict[str, Any]]:
    """(apiVersion, kind, openAPIV3Schema) of the served version of a CRD in crds/."""
    crd = next(d for d in yaml.safe_load_all((CHART / "crds" / file).read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v["served"] and v.get("storage"))
    api_version = f"{crd['spec']['group']}/{version['name']}"
    return api_version, crd["spec"]["names"]["kind"], strict_object(version["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("env", ENVS)
def test_queueconfigs_match_the_crd_and_the_registry(rendered: dict[str, list[Doc]], env: str) -> None:
    api_version, kind, schema = crd_schema("queueconfig.yaml")
    configs = [d for d in rendered[env] if d["kind"] == kind]
    for doc in configs:
        assert doc["apiVersion"] == api_version
        jsonschema.validate(doc, schema)
        assert doc["metadata"]["name"] == doc["spec"]["queue"].replace(":", "-")
    registry_queues = sorted(q.name for qs in families().values() for q in qs)
    assert sorted(d["spec"]["queue"] for d in configs) == registry_queues


def test_queueconfig_specs_from_values_are_checked_by_the_crd() -> None:
    _, _, schema = crd_schema("queueconfig.yaml")
    ok = render(queueConfigs={"specs": {"email:send": {"concurrency": 32, "paused": False}}})
    email = of_kind(ok, "QueueConfig")["email-send"]
    assert email["spec"] == {"queue": "email:send", "concurrency": 32, "paused": False}
    jsonschema.validate(email, schema)

    # values.schema.json carries the CRD's spec schema (generated by `make crd`), so a spec the
    # API server would refuse is refused by `helm install` already, before anything is applied
    for spec, named in (
        ({"concurency": 3}, "concurency"),
        ({"concurrency": "lots"}, "concurrency"),
        ({"concurrency": 0}, "concurrency"),
        ({"replicas": 101}, "replicas"),
        ({"retry": {"backoff": {"initial": "2 seconds"}}}, "initial"),
        ({"queue": "otp:send"}, "queue"),
    ):
        with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as info:
            chart.render({"queueConfigs": {"specs": {"email:send": spec}}}, name=RELEASE, namespace=NAMESPACE)
        assert named in str(info.value), spec
        if "queue" not in spec:  # the chart sets queue (the key of specs); the rest the CRD refuses too
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({**email, "spec": {**email["spec"], **spec}}, schema)


def test_values_schema_for_queueconfig_specs_is_the_crds() -> None:
    from tq_operator.crd import values_spec_schema

    values_schema = json.loads((CHART / "values.schema.json").read_text())
    assert values_schema["$defs"]["queueConfigSpec"] == values_spec_schema()
    _, _, crd = crd_schema("queueconfig.yaml")
    spec = crd["properties"]["spec"]
    assert set(values_spec_schema()["properties"]) == set(spec["properties"]) - {"queue"}
    # the operator's own cap on spec.replicas (operator.maxReplicas) stays within the CRD's
    most = values_schema["properties"]["operator"]["properties"]["maxReplicas"]["maximum"]
    assert most == spec["properties"]["replicas"]["maximum"]


def test_disabled_family_has_no_deployment_and_no_queueconfigs() -> None:
    docs = render(families={"media": {"enabled": False, "queues": ["media:optimize"]}})
    assert component("media") not in of_kind(docs, "Deployment")
    assert "media-optimize" not in of_kind(docs, "QueueConfig")
    assert component("messaging") in of_kind(docs, "Deployment")


def test_peering_object_is_the_generated_file_and_matches_its_crd(rendered: dict[str, list[Doc]]) -> None:
    api_version, kind, schema = crd_schema("clusterkopfpeering.yaml")
    generated = [d for d in yaml.safe_load_all((CHART / "files" / "operator-peering.yaml").read_text()) if d]
    (peering,) = [d for d in rendered["prod"] if d["kind"] == kind]
    # the generated object, named per release and namespace (two releases in one cluster)
    assert peering == {
        **generated[0],
        "metadata": {**generated[0]["metadata"], "name": f"tq-operator-{NAMESPACE}"},
    }
    assert peering["apiVersion"] == api_version
    jsonschema.validate(peering, schema)
    operator = of_kind(rendered["prod"], "Deployment")[component("operator")]
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    assert env["TQ_OPERATOR_PEERING"]["value"] == peering["metadata"]["name"]

    standalone = render(operator={"peering": False})
    assert not [d for d in standalone if d["kind"] == kind]
    operator = of_kind(standalone, "Deployment")[component("operator")]
    assert env_of(operator["spec"]["template"]["spec"]["containers"][0])["TQ_OPERATOR_PEERING"]["value"] == ""


# ---------------------------------------------------------------- values, schema, registry


def test_family_map_and_schema_agree_with_the_registry() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    registry = {name: [q.name for q in queues] for name, queues in families().items()}
    assert {name: f["queues"] for name, f in values["families"].items()} == registry
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = schema["properties"]
    assert set(props["families"]["properties"]) == set(registry)
    assert props["families"]["additionalProperties"] is False
    all_queues = {q for qs in registry.values() for q in qs}
    assert set(props["queueConfigs"]["properties"]["specs"]["properties"]) == all_queues


BAD_VALUES = [
    pytest.param({"familes": {}}, "familes", id="typo-top-level"),
    pytest.param(
        {"families": {"ai": {"enabled": True, "queues": ["ai:content"], "replica": 2}}},
        "replica",
        id="typo-family",
    ),
    pytest.param(
        {"families": {"billing": {"enabled": True, "queues": ["x"]}}}, "billing", id="unknown-family"
    ),
    pytest.param({"replicas": "two"}, "replicas", id="wrong-type"),
    pytest.param({"keda": {"enabled": "yes"}}, "enabled", id="wrong-type-bool"),
    pytest.param({"antiAffinity": "sometimes"}, "antiAffinity", id="bad-enum"),
    pytest.param({"env": {"REDIS_URL": "x"}}, "REDIS_URL", id="env-not-tq"),
    pytest.param({"env": {"TQ_LLM_API_KEY": "sk-x"}}, "TQ_LLM_API_KEY", id="credential-in-env"),
    pytest.param(
        {"env": {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=x"}},
        "OTEL_EXPORTER_OTLP_HEADERS",
        id="tracing-credential-in-env",
    ),
    pytest.param({"metrics": {"serviceMonitor": {"honorLabels": False}}}, "honorLabels", id="typo-nested"),
    pytest.param(
        {"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation", id="insecure"
    ),
    pytest.param({"queueConfigs": {"specs": {"email:sned": {}}}}, "email:sned", id="unknown-queue"),
    pytest.param(
        {"queueConfigs": {"specs": {"email:send": {"concurency": 3}}}}, "concurency", id="spec-field-typo"
    ),
    pytest.param(
        {"queueConfigs": {"specs": {"email:send": {"concurrency": "lots"}}}},
        "concurrency",
        id="spec-wrong-type",
    ),
    pytest.param({"operator": {"maxReplicas": 500}}, "maxReplicas", id="max-replicas-above-the-crd"),
    pytest.param({"terminationMarginSeconds": 0}, "terminationMarginSeconds", id="no-drain-margin"),
]


@pytest.mark.parametrize(("values", "named"), BAD_VALUES)
def test_values_schema_rejects_typos_and_wrong_types(values: dict[str, Any], named: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as info:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert named in str(info.value)


def test_values_are_documented() -> None:
    """Every leaf of values.yaml has a `# --` comment (helm-docs style) on it or on a parent."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    documented_indents: list[int] = []  # indents of the documented parents we are inside
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        indent = len(line) - len(stripped)
        documented_indents = [d for d in documented_indents if d < indent]
        is_doc = i > 0 and lines[i - 1].strip().startswith("# --")
        if is_doc:
            documented_indents.append(indent)
        elif not documented_indents and not stripped.endswith(":"):
            undocumented.append(stripped)
    assert undocumented == []


# ---------------------------------------------------------------- workloads


@pytest.mark.parametrize("env", ENVS)
def test_a_deployment_and_service_per_family_and_the_admin(rendered: dict[str, list[Doc]], env: str) -> None:
    docs = rendered[env]
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    for family in families():
        spec = deployments[component(family)]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["args"] == ["serve", family, "--port", "8000"]
        assert "command" not in container  # the image's entrypoint: tq
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        service = services[component(family)]
        assert (
            service["spec"]["selector"] == deployments[component(family)]["spec"]["selector"]["matchLabels"]
        )
    admin = deployments[component("admin")]["spec"]["template"]["spec"]["containers"][0]
    assert admin["args"] == ["serve", "admin", "--port", "8080"]
    assert admin["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert services[component("admin")]["spec"]["ports"][0]["port"] == 8080
    operator = deployments[component("operator")]["spec"]["template"]["spec"]
    assert operator["containers"][0]["args"] == ["operator"]
    assert operator["serviceAccountName"] == component("operator")


@pytest.mark.parametrize("env", ENVS)
def test_drain_fits_in_the_termination_grace_period(rendered: dict[str, list[Doc]], env: str) -> None:
    checked = 0
    for where, spec in pod_specs(rendered[env]):
        for container in spec["containers"]:
            grace = env_of(container).get("TQ_SHUTDOWN_GRACE_S")
            if grace is None or where.startswith("Job/"):
                continue  # bundled databases; the migration Job does not drain
            assert spec["terminationGracePeriodSeconds"] > float(grace["value"]), where
            checked += 1
    assert checked >= len(families()) + 2


@pytest.mark.parametrize("env", ENVS)
def test_security_contexts(rendered: dict[str, list[Doc]], env: str) -> None:
    for where, spec in pod_specs(rendered[env]):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] > 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc.get("privileged", False) is False, where


def test_connections_and_credentials_come_from_secrets(rendered: dict[str, list[Doc]]) -> None:
    staging = of_kind(rendered["staging"], "Deployment")
    expected = {
        "messaging": {
            "TQ_REDIS_URL": ("tq-connections", "redis-url"),
            "TQ_DATABASE_URL": ("tq-connections", "database-url"),
            "TQ_SMTP_PASSWORD": ("tq-smtp", "password"),
            "TQ_SMS_PROVIDER_TOKEN": ("tq-sms", "token"),
        },
        "ai": {"TQ_LLM_API_KEY": ("tq-llm", "api-key")},
        "media": {
            "TQ_MEDIA_S3_ACCESS_KEY_ID": ("tq-s3", "access-key-id"),
            "TQ_MEDIA_S3_SECRET_ACCESS_KEY": ("tq-s3", "secret-access-key"),
        },
        "admin": {"TQ_ADMIN_JWT_KEY": ("tq-admin", "jwt-key")},
    }
    for name, entries in expected.items():
        env = env_of(staging[component(name)]["spec"]["template"]["spec"]["containers"][0])
        for var, (secret, key) in entries.items():
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (secret, key), var
            assert "value" not in env[var]
    for docs in rendered.values():  # no plain Secret values except the dev-only bundled one
        # and the admin's signing key the chart generates when no Secret is named (default, dev)
        assert {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"} <= {
            "tq-bundled",
            "tq-admin-jwt",
        }


# Each credential and the only component whose pod may carry it.
CREDENTIALS = {
    "TQ_LLM_API_KEY": "ai",
    "TQ_SMTP_USERNAME": "messaging",
    "TQ_SMTP_PASSWORD": "messaging",
    "TQ_SMS_PROVIDER_TOKEN": "messaging",
    "TQ_MEDIA_S3_ACCESS_KEY_ID": "media",
    "TQ_MEDIA_S3_SECRET_ACCESS_KEY": "media",
    "TQ_ADMIN_JWT_KEY": "admin",
}
EVERY_CREDENTIAL = {
    "llm": {"existingSecret": "llm"},
    "smtp": {"existingSecret": "smtp"},
    "sms": {"existingSecret": "sms"},
    "s3": {"existingSecret": "s3"},
}


def pods_by_component(docs: list[Doc]) -> Iterator[tuple[str, str, Doc]]:
    """(where, component label, pod spec) of every Deployment and Job."""
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            labels = d["spec"]["template"]["metadata"].get("labels") or d["metadata"].get("labels") or {}
            where = f"{d['kind']}/{d['metadata']['name']}"
            yield where, labels.get("app.kubernetes.io/component", ""), d["spec"]["template"]["spec"]


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("every", [False, True], ids=["as-is", "every-credential"])
def test_each_credential_is_only_in_the_pod_that_uses_it(
    rendered: dict[str, list[Doc]], env: str, every: bool
) -> None:
    """The LLM key only in ai, SMTP and SMS only in messaging, S3 only in media, the JWT key only in
    the admin; each from a Secret, never a plain value. Every values file, as it is and with every
    credential configured."""
    docs = render(env, credentials=EVERY_CREDENTIAL) if every else rendered[env]
    configured = {**env_values(env).get("credentials", {}), **(EVERY_CREDENTIAL if every else {})}
    wanted = {"admin": {"TQ_ADMIN_JWT_KEY"}}
    for kind, owner, names in (
        ("llm", "ai", {"TQ_LLM_API_KEY"}),
        ("smtp", "messaging", {"TQ_SMTP_USERNAME", "TQ_SMTP_PASSWORD"}),
        ("sms", "messaging", {"TQ_SMS_PROVIDER_TOKEN"}),
        ("s3", "media", {"TQ_MEDIA_S3_ACCESS_KEY_ID", "TQ_MEDIA_S3_SECRET_ACCESS_KEY"}),
    ):
        if configured.get(kind, {}).get("existingSecret"):
            wanted.setdefault(owner, set()).update(names)
    seen: dict[str, set[str]] = {}
    for where, owner, spec in pods_by_component(docs):
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            for name, entry in env_of(container).items():
                if name in CREDENTIALS:
                    assert CREDENTIALS[name] == owner, f"{name} in {where}"
                    assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"], where
                    seen.setdefault(owner, set()).add(name)
    assert seen == wanted


def test_prod(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    deployments, pdbs = of_kind(docs, "Deployment"), of_kind(docs, "PodDisruptionBudget")
    for family in families():
        deployment = deployments[component(family)]
        assert deployment["spec"]["replicas"] == 2
        affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        term = affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert pdbs[component(family)]["spec"]["selector"] == deployment["spec"]["selector"]
    assert {component("admin"), component("operator")} <= set(pdbs)
    assert of_kind(docs, "ServiceMonitor")
    assert not {component("redis"), component("postgres")} & set(deployments)
    assert not of_kind(docs, "Secret")


# ---------------------------------------------------------------- toggles


def family_pod_annotations(docs: list[Doc], family: str) -> dict[str, str]:
    meta = of_kind(docs, "Deployment")[component(family)]["spec"]["template"]["metadata"]
    annotations: dict[str, str] = meta.get("annotations") or {}
    return annotations


def test_service_monitor_toggle() -> None:
    on = render(metrics={"serviceMonitor": {"enabled": True}})
    (monitor,) = of_kind(on, "ServiceMonitor").values()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    (selected,) = monitor["spec"]["selector"]["matchExpressions"]
    assert sorted(selected["values"]) == sorted([*families(), "operator"])  # the operator's metrics too
    assert "prometheus.io/scrape" not in family_pod_annotations(on, "ai")

    off = render(metrics={"serviceMonitor": {"enabled": False}})
    assert not of_kind(off, "ServiceMonitor")
    annotations = family_pod_annotations(off, "ai")
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"


def test_operator_probes_metrics_and_event_source(rendered: dict[str, list[Doc]]) -> None:
    """kopf's liveness endpoint backs both probes; its tq_operator_* metrics are scraped like the
    services' (a Service with port http for the ServiceMonitor, or the scrape annotations)."""
    for env, docs in rendered.items():
        deployment = of_kind(docs, "Deployment")[component("operator")]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"health": 8080, "metrics": 8000}, env
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, env
        variables = env_of(container)
        assert variables["TQ_OPERATOR_HEALTH_PORT"]["value"] == "8080"
        assert variables["TQ_OPERATOR_METRICS_PORT"]["value"] == "8000"
        assert variables["TQ_OPERATOR_MAX_REPLICAS"]["value"] == "20"
        assert variables["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        service = of_kind(docs, "Service")[component("operator")]
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}
        ]
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        if of_kind(docs, "ServiceMonitor"):
            assert "prometheus.io/scrape" not in annotations
        else:
            assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == (
                "true",
                "8000",
            )


def test_keda_toggle() -> None:
    on = render(keda={"enabled": True, "redis": {"address": "redis:6379"}})
    scaled = of_kind(on, "ScaledObject")
    deployments = of_kind(on, "Deployment")
    assert set(scaled) == {component(f) for f in families()}
    for family, queues in families().items():
        obj = scaled[component(family)]
        assert obj["spec"]["scaleTargetRef"]["name"] == component(family)
        assert "replicas" not in deployments[component(family)]["spec"]  # KEDA owns it
        triggers = obj["spec"]["triggers"]
        assert [t["metadata"]["stream"] for t in triggers] == [f"tq:{{{q.name}}}:stream" for q in queues]
        assert {t["type"] for t in triggers} == {"redis-streams"}
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {"tq"}
        assert {t["metadata"]["address"] for t in triggers} == {"redis:6379"}
        scale_down = obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert scale_down["stabilizationWindowSeconds"] >= 60
        assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    operator = deployments[component("operator")]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(operator)["TQ_OPERATOR_KEDA"]["value"] == "true"

    off = render(keda={"enabled": False})
    assert not of_kind(off, "ScaledObject")
    assert of_kind(off, "Deployment")[component("ai")]["spec"]["replicas"] == 1
    operator = of_kind(off, "Deployment")[component("operator")]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(operator)["TQ_OPERATOR_KEDA"]["value"] == "false"


def test_keda_redis_password_from_a_secret(rendered: dict[str, list[Doc]]) -> None:
    staging = rendered["staging"]
    (auth,) = of_kind(staging, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "tq-connections", "key": "redis-password"}
    ]
    for obj in of_kind(staging, "ScaledObject").values():
        assert {t["authenticationRef"]["name"] for t in obj["spec"]["triggers"]} == {auth["metadata"]["name"]}


def test_tracing_variables_reach_every_tq_container() -> None:
    """``env`` takes the OTEL_* variables that switch tracing on (docs/engine.md, "Tracing")."""
    otel = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318"}
    deployments = of_kind(render_values({"env": otel}), "Deployment")
    assert deployments
    for name, deployment in deployments.items():
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert {k: env[k]["value"] for k in otel if k in env} == otel, name


def keda_triggers(values: dict[str, Any]) -> list[Doc]:
    docs = render_values(values)
    api_version, schema = foreign_crd("ScaledObject")
    scaled = of_kind(docs, "ScaledObject")
    for obj in scaled.values():
        assert obj["apiVersion"] == api_version
        jsonschema.validate(obj, schema)
    return [t for obj in scaled.values() for t in obj["spec"]["triggers"]]


KEDA_TOPOLOGIES = [
    pytest.param(
        {"keda": {"enabled": True, "redis": {"address": "rediss://tq-keda@redis.example:6380/2"}}},
        "redis-streams",
        {"address": "redis.example:6380", "username": "tq-keda", "enableTLS": "true", "databaseIndex": "2"},
        id="url-username-tls-db",
    ),
    pytest.param(
        {
            "keda": {
                "enabled": True,
                "redis": {"address": "redis:6379", "enableTLS": True, "databaseIndex": 1},
            }
        },
        "redis-streams",
        {"address": "redis:6379", "enableTLS": "true", "databaseIndex": "1"},
        id="host-port-tls",
    ),
    pytest.param(
        {
            "keda": {"enabled": True, "redis": {"address": "s1:26379,s2:26379"}},
            "env": {"TQ_REDIS_SENTINELS": "s1:26379,s2:26379", "TQ_REDIS_SENTINEL_MASTER": "queues"},
        },
        "redis-sentinel-streams",
        {"addresses": "s1:26379,s2:26379", "sentinelMaster": "queues", "databaseIndex": "0"},
        id="sentinel",
    ),
    pytest.param(
        {
            "keda": {"enabled": True, "redis": {"address": "redis://keda@n1:6379,n2:6379"}},
            "env": {"TQ_REDIS_CLUSTER": "true"},
        },
        "redis-cluster-streams",
        {"addresses": "n1:6379,n2:6379", "username": "keda"},
        id="cluster",
    ),
]


@pytest.mark.parametrize(("values", "trigger_type", "expected"), KEDA_TOPOLOGIES)
def test_keda_triggers_follow_the_redis_topology(
    values: dict[str, Any], trigger_type: str, expected: dict[str, str]
) -> None:
    triggers = keda_triggers(values)
    assert len(triggers) == sum(len(qs) for qs in families().values())
    for trigger in triggers:
        assert trigger["type"] == trigger_type
        metadata = trigger["metadata"]
        assert {k: metadata.get(k) for k in expected} == expected
        # nothing of another topology: a cluster has no database, a single Redis no "addresses"
        assert ("databaseIndex" in metadata) == (trigger_type != "redis-cluster-streams")
        assert ("address" in metadata) == (trigger_type == "redis-streams")
        if "enableTLS" not in expected:
            assert "enableTLS" not in metadata


KEDA_REFUSED = [
    pytest.param(
        {"keda": {"enabled": True, "redis": {"address": "redis://tq:secret@redis:6379"}}},
        "a password in the URL is refused",
        id="password-in-url",
    ),
    pytest.param(
        {"keda": {"enabled": True, "redis": {"address": "n1:6379,n2:6379"}}},
        "several host:port are for Sentinel",
        id="several-addresses-single-redis",
    ),
    pytest.param(
        {
            "keda": {"enabled": True, "redis": {"address": "redis://n1:6379/3"}},
            "env": {"TQ_REDIS_CLUSTER": True},
        },
        "a Redis Cluster has only database 0",
        id="cluster-database",
    ),
    pytest.param(
        {
            "keda": {"enabled": True, "redis": {"address": "n1:6379"}},
            "env": {"TQ_REDIS_CLUSTER": "true", "TQ_REDIS_SENTINELS": "s1:26379"},
        },
        "TQ_REDIS_SENTINELS and TQ_REDIS_CLUSTER together are refused",
        id="sentinel-and-cluster",
    ),
    pytest.param(
        {"keda": {"enabled": True, "redis": {"address": "redis-master.redis.svc"}}},
        "/keda/redis/address",  # the schema: host:port or a redis:// URL
        id="no-port",
    ),
]


@pytest.mark.parametrize(("values", "message"), KEDA_REFUSED)
def test_keda_refuses_what_it_cannot_read_like_the_services(values: dict[str, Any], message: str) -> None:
    with pytest.raises((helm.HelmRenderError, helm.HelmValuesError)) as info:
        render_values(values)
    assert message in str(info.value)


def test_keda_redis_address_is_required_without_the_bundled_redis() -> None:
    # the schema says so (helm install refuses before anything is applied) ...
    with pytest.raises(helm.HelmValuesError) as info:
        render_values({"keda": {"enabled": True}})
    assert "/keda/redis/address" in str(info.value)
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert "keda.redis.address is required" in json.dumps(schema["allOf"])
    # ... and the template too, with the message, for `helm template --skip-schema-validation`
    template = (CHART / "templates" / "keda.yaml").read_text()
    assert 'fail "keda.redis.address is required when bundled.redis is off' in template
    # the bundled Redis is the default address
    triggers = keda_triggers({"keda": {"enabled": True}, "bundled": {"redis": {"enabled": True}}})
    assert {t["metadata"]["address"] for t in triggers} == {"tq-redis:6379"}


def test_bundled_databases_toggle() -> None:
    on = render(bundled={"redis": {"enabled": True}, "postgres": {"enabled": True}})
    deployments = of_kind(on, "Deployment")
    assert {component("redis"), component("postgres")} <= set(deployments)
    assert {component("redis"), component("postgres")} <= set(of_kind(on, "Service"))
    secret = of_kind(on, "Secret")["tq-bundled"]
    assert secret["stringData"]["redis-url"] == "redis://tq-redis:6379/0"
    assert secret["stringData"]["database-url"].startswith("postgresql+asyncpg://tq:")
    assert secret["stringData"]["database-url"].endswith("@tq-postgres:5432/tq")
    env = env_of(deployments[component("search")]["spec"]["template"]["spec"]["containers"][0])
    assert env["TQ_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "tq-bundled", "key": "redis-url"}
    assert env["TQ_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "tq-bundled",
        "key": "database-url",
    }

    off = render(connections={"redis": {"existingSecret": "r"}, "database": {"existingSecret": "d"}})
    assert not {component("redis"), component("postgres")} & set(of_kind(off, "Deployment"))
    assert set(of_kind(off, "Secret")) == {"tq-admin-jwt"}
    env = env_of(of_kind(off, "Deployment")[component("search")]["spec"]["template"]["spec"]["containers"][0])
    assert env["TQ_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "r", "key": "redis-url"}
    assert env["TQ_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "d", "key": "database-url"}


def test_without_bundled_redis_an_existing_secret_is_required() -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError) as info:
        chart.render({"connections": {"redis": {"existingSecret": ""}}}, name=RELEASE, namespace=NAMESPACE)
    assert "connections.redis.existingSecret is required" in str(info.value)


# ---------------------------------------------------------------- operator RBAC, observability


def test_operator_rbac_is_the_generated_role(rendered: dict[str, list[Doc]]) -> None:
    generated = [d for d in yaml.safe_load_all((CHART / "files" / "operator-rbac.yaml").read_text()) if d]
    docs = rendered["default"]
    (role,) = of_kind(docs, "ClusterRole").values()
    assert role["rules"] == generated[0]["rules"]
    (binding,) = of_kind(docs, "ClusterRoleBinding").values()
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": component("operator"), "namespace": NAMESPACE}
    ]
    assert component("operator") in of_kind(docs, "ServiceAccount")
    operator = of_kind(docs, "Deployment")[component("operator")]["spec"]["template"]["spec"]["containers"][0]
    pattern = env_of(operator)["TQ_OPERATOR_DEPLOYMENT"]["value"]
    deployments = of_kind(docs, "Deployment")
    for family in families():  # the operator scales the Deployments the chart made
        assert pattern.format(family=family) in deployments
    # ... and only those: resourceNames, this release's names of its family map
    other = render(fullnameOverride="shop")
    named = [r for r in of_kind(other, "ClusterRole")["shop-operator-tq"]["rules"] if "resourceNames" in r]
    assert sorted(r["resources"][0] for r in named) == ["deployments/scale", "scaledobjects"]
    for rule in named:  # the family Deployments, and the ScaledObjects named like them (keda.yaml)
        assert rule["resourceNames"] == sorted(f"shop-{family}" for family in families())
        assert set(rule["resourceNames"]) <= set(of_kind(other, "Deployment"))
    keda = render(fullnameOverride="shop", keda={"enabled": True, "redis": {"address": "redis:6379"}})
    assert set(of_kind(keda, "ScaledObject")) == set(named[0]["resourceNames"])
    operator = of_kind(other, "Deployment")["shop-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(operator)["TQ_OPERATOR_DEPLOYMENT"]["value"] == "shop-{family}"


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (Debian package prometheus)"
)
def test_rendered_prometheus_rule_passes_promtool(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    (rule,) = of_kind(rendered["prod"], "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts" / "tq-alerts.yaml").read_text())
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert not of_kind(rendered["dev"], "PrometheusRule")


def test_dashboards_configmaps(rendered: dict[str, list[Doc]]) -> None:
    files = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert files
    maps = [d for d in rendered["default"] if d["kind"] == "ConfigMap"]
    by_key = {key: (cm, value) for cm in maps for key, value in cm["data"].items()}
    assert sorted(by_key) == [f.name for f in files]
    for f in files:
        cm, value = by_key[f.name]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(value) == json.loads(f.read_text())
    assert not [d for d in render(metrics={"dashboards": {"enabled": False}}) if d["kind"] == "ConfigMap"]


def test_notes_tell_what_was_installed() -> None:
    text = notes("prod")
    for family in families():
        assert component(family) in text
    assert "ServiceMonitor" in text and "kubectl get pods" in text


# ---------------------------------------------------------------- day one (issue 16)


def admin_container(docs: list[Doc]) -> Doc:
    return of_kind(docs, "Deployment")[component("admin")]["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("env", ENVS)
def test_admin_has_a_signing_key_with_every_values_file(rendered: dict[str, list[Doc]], env: str) -> None:
    """`tq serve admin` exits without TQ_ADMIN_JWT_KEY: every values file gives it one, from the
    named Secret or from the one the chart makes."""
    docs = rendered[env]
    ref = env_of(admin_container(docs))["TQ_ADMIN_JWT_KEY"]["valueFrom"]["secretKeyRef"]
    named = env_values(env).get("admin", {}).get("jwtSecret", {}).get("name")
    secrets = of_kind(docs, "Secret")
    if named:
        assert ref == {"name": named, "key": "jwt-key"}
        assert named not in secrets  # the operator's own Secret: the chart never makes it
        assert "tq-admin-jwt" not in secrets
    else:
        assert ref == {"name": "tq-admin-jwt", "key": "jwt-key"}
        key = base64.b64decode(secrets["tq-admin-jwt"]["data"]["jwt-key"])
        assert len(key) >= 32  # what AdminSettings requires of an HMAC key
    text = notes(env)
    assert f"kubectl exec -n {NAMESPACE} deploy/{component('admin')} -- tq token create --role owner" in text
    assert f"Secret {ref['name']}" in text


def test_admin_signing_key_is_kept_across_upgrades() -> None:
    """The Secret is generated once: the template reads it back with `lookup` and reuses its key
    (helm template has no cluster, so the lookup part is checked in the template text)."""
    text = (CHART / "templates" / "admin.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $secretName' in text
    assert "$key = index $existing.data $jwt.key" in text
    first, second = render(), render()
    key = of_kind(first, "Secret")["tq-admin-jwt"]["data"]["jwt-key"]
    assert key != of_kind(second, "Secret")["tq-admin-jwt"]["data"]["jwt-key"]  # random without lookup
    assert "tq-admin-jwt" not in of_kind(render(admin={"enabled": False}), "Secret")


def render_in(namespace: str, env: str = "default", **overrides: Any) -> list[Doc]:
    return render_values(deep_merge(env_values(env), overrides), namespace)


def cluster_scoped(docs: list[Doc]) -> set[tuple[str, str]]:
    return {
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering")
    }


def test_two_releases_in_two_namespaces_do_not_collide() -> None:
    dev, staging = render_in("dev", "dev"), render_in("staging", "staging")
    assert len(cluster_scoped(dev)) == 3 and len(cluster_scoped(staging)) == 3
    assert not cluster_scoped(dev) & cluster_scoped(staging)
    for ns, docs in (("dev", dev), ("staging", staging)):
        operator = of_kind(docs, "Deployment")[component("operator")]["spec"]["template"]["spec"][
            "containers"
        ][0]
        env = env_of(operator)
        assert env["TQ_OPERATOR_NAMESPACES"]["value"] == ns  # only its own namespace
        (peering,) = [d for d in docs if d["kind"] == "ClusterKopfPeering"]
        assert env["TQ_OPERATOR_PEERING"]["value"] == peering["metadata"]["name"] == f"tq-operator-{ns}"
        (binding,) = of_kind(docs, "ClusterRoleBinding").values()
        assert binding["subjects"][0]["namespace"] == ns

    more = render_in("dev", operator={"watchNamespaces": ["dev-preview", "dev"]})
    operator = of_kind(more, "Deployment")[component("operator")]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(operator)["TQ_OPERATOR_NAMESPACES"]["value"] == "dev,dev-preview"
    every = render_in("dev", operator={"watchNamespaces": ["*"]})
    operator = of_kind(every, "Deployment")[component("operator")]["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert env_of(operator)["TQ_OPERATOR_NAMESPACES"]["value"] == ""


def hooks(docs: list[Doc], event: str) -> dict[str, Doc]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d
        for d in docs
        if event in (d["metadata"].get("annotations") or {}).get("helm.sh/hook", "").split(",")
    }


def uninstall_command(docs: list[Doc]) -> list[str]:
    """The kubectl arguments of the pre-delete hook Job (tests/operator runs them for real)."""
    job = hooks(docs, "pre-delete")[f"Job/{component('uninstall')}"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


@pytest.mark.parametrize("env", ENVS)
def test_uninstall_deletes_the_queueconfigs_first(rendered: dict[str, list[Doc]], env: str) -> None:
    docs = rendered[env]
    pre_delete = hooks(docs, "pre-delete")
    name = component("uninstall")
    assert set(pre_delete) == {f"{k}/{name}" for k in ("ServiceAccount", "Role", "RoleBinding", "Job")}
    weights = {k: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for k, d in pre_delete.items()}
    assert weights[f"Job/{name}"] > max(w for k, w in weights.items() if not k.startswith("Job/"))
    args = uninstall_command(docs)
    assert args[:2] == ["delete", "queueconfigs.queues.teknav.io,jobschedules.queues.teknav.io"]
    assert f"--namespace={NAMESPACE}" in args and "--wait=true" in args
    assert f"--selector=app.kubernetes.io/instance={RELEASE},app.kubernetes.io/part-of=tq" in args
    timeout = next(a for a in args if a.startswith("--timeout="))
    job = pre_delete[f"Job/{name}"]
    assert job["spec"]["activeDeadlineSeconds"] > int(timeout.removeprefix("--timeout=").removesuffix("s"))
    role = pre_delete[f"Role/{name}"]
    assert role["rules"] == [
        {
            "apiGroups": ["queues.teknav.io"],
            "resources": ["queueconfigs", "jobschedules"],
            "verbs": ["get", "list", "watch", "delete"],
        }
    ]
    binding = pre_delete[f"RoleBinding/{name}"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == name
    # every QueueConfig and JobSchedule the chart makes carries the labels the Job selects by
    for qc in [*of_kind(docs, "QueueConfig").values(), *of_kind(docs, "JobSchedule").values()]:
        labels = qc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE and labels["app.kubernetes.io/part-of"] == "tq"
    assert not hooks(render(uninstall={"deleteQueueConfigs": False}), "pre-delete")
    assert hooks(render(queueConfigs={"enabled": False}), "pre-delete")  # the JobSchedules
    assert not hooks(render(queueConfigs={"enabled": False}, jobSchedules={"defaults": False}), "pre-delete")


@pytest.mark.parametrize("env", ENVS)
def test_migration_runs_before_the_workers(rendered: dict[str, list[Doc]], env: str) -> None:
    (job,) = [
        d for d in rendered[env] if d["kind"] == "Job" and d["metadata"]["name"] == component("migrate")
    ]
    events = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    bundled = env_values(env).get("bundled", {})
    if any(b.get("enabled") for b in bundled.values()):
        # dev: the bundled databases and their Secret exist only after the install; until the
        # post-install migration ran, the family services are not ready and take no job
        assert events == ["post-install", "pre-upgrade"]
    else:
        assert events == ["pre-install", "pre-upgrade"]


# ---------------------------------------------------------------- hardening (issue 16)


def tq_images(docs: list[Doc]) -> set[str]:
    """The images of the tq containers (not the uninstall hook's kubectl)."""
    return {
        c["image"] for _, spec in pod_specs(docs) for c in spec["containers"] if "kubectl" not in c["image"]
    }


def test_image_tag_defaults_to_the_app_version_with_an_optional_digest() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert tq_images(render()) == {f"tq:{app_version}"}
    digest = "sha256:" + "ab" * 32
    pinned = render(image={"repository": "registry.example/tq", "tag": "1.2.3", "digest": digest})
    assert tq_images(pinned) == {f"registry.example/tq:1.2.3@{digest}"}
    assert tq_images(render(image={"digest": digest})) == {f"tq:{app_version}@{digest}"}
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as info:
        chart.render({"image": {"digest": "latest"}}, name=RELEASE, namespace=NAMESPACE)
    assert "digest" in str(info.value)


def pod_labels(doc: Doc) -> dict[str, str]:
    return dict(
        doc["metadata"]["labels"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]["labels"]
    )


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


def selects(policy: Doc, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


@pytest.mark.parametrize("env", ENVS)
def test_a_network_policy_per_component(env: str) -> None:
    docs = render(env, networkPolicy={"enabled": True})
    policies = of_kind(docs, "NetworkPolicy")
    for doc in policies.values():
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        assert doc["spec"]["policyTypes"] == ["Ingress"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Job", "Pod")]  # Pod: `helm test`'s
    for workload in workloads:  # every pod is selected by exactly its component's policy
        matching = [name for name, p in policies.items() if selects(p, pod_labels(workload))]
        assert matching == [workload["metadata"]["name"]], workload["metadata"]["name"]
        policy = policies[workload["metadata"]["name"]]
        container_ports = {
            p["containerPort"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])
        }
        allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert allowed == container_ports, workload["metadata"]["name"]  # Jobs: none, no ingress
    if component("redis") in policies:
        (rule,) = policies[component("redis")]["spec"]["ingress"]
        assert rule["from"] == [
            {
                "podSelector": {
                    "matchLabels": {"app.kubernetes.io/name": "tq", "app.kubernetes.io/instance": RELEASE}
                }
            }
        ]
    assert len(policies) == len(workloads)
    if env == "prod":  # on in prod
        assert set(of_kind(render_in(NAMESPACE, "prod"), "NetworkPolicy")) == set(policies)
    else:
        assert not of_kind(render(env), "NetworkPolicy")
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    admin = of_kind(render(env, networkPolicy={"enabled": True, "adminFrom": peers}), "NetworkPolicy")
    # ... and the `helm test` Pod, which asks the admin for /readyz
    selector = {"app.kubernetes.io/name": "tq", "app.kubernetes.io/instance": RELEASE}
    tester = {"podSelector": {"matchLabels": {**selector, "app.kubernetes.io/component": "test"}}}
    assert admin[component("admin")]["spec"]["ingress"][0]["from"] == [*peers, tester]


def test_prod_spreads_over_zones_and_pdbs_never_block_a_drain(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    for name, deployment in of_kind(docs, "Deployment").items():
        (constraint,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert constraint["topologyKey"] == "topology.kubernetes.io/zone"
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"], (
            name
        )
    assert (
        "topologySpreadConstraints"
        not in of_kind(rendered["default"], "Deployment")[component("ai")]["spec"]["template"]["spec"]
    )
    for env in ENVS:
        for pdb in of_kind(render(env, pdb={"enabled": True}), "PodDisruptionBudget").values():
            assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert of_kind(docs, "PodDisruptionBudget")


def test_bundled_databases_have_probes(rendered: dict[str, list[Doc]]) -> None:
    deployments = of_kind(rendered["dev"], "Deployment")
    for name, command in (("redis", ["redis-cli", "ping"]), ("postgres", ["pg_isready", "-U", "tq"])):
        (container,) = deployments[component(name)]["spec"]["template"]["spec"]["containers"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["exec"]["command"] == command, (name, probe)


# ---------------------------------------------------------------- helm test


@pytest.mark.parametrize("env", ENVS)
def test_helm_test_pod_asks_the_admin_and_a_family_for_readyz(
    rendered: dict[str, list[Doc]], env: str
) -> None:
    docs = rendered[env]
    (pod,) = of_kind(docs, "Pod").values()  # kubernetes-validate checked it with the other objects
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert (
        container["image"]
        == of_kind(docs, "Deployment")[component("admin")]["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
    )  # the tq image: nothing else to pull
    _script, timeout, *urls = container["args"]
    assert int(timeout) > 0
    services = of_kind(docs, "Service")
    checked = []
    for url in urls:  # each is a Service of the release, on its port, at /readyz
        host, port = url.removeprefix("http://").removesuffix("/readyz").split(":")
        assert url.endswith("/readyz") and int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
        checked.append(host)
    assert checked == [component("admin"), component(sorted(families())[0])]
    other = render_values({"helmTest": {"family": "search"}, "admin": {"enabled": False}})
    (pod,) = of_kind(other, "Pod").values()
    assert pod["spec"]["containers"][0]["args"][2:] == [f"http://{component('search')}:8000/readyz"]
    assert not of_kind(render_values({"helmTest": {"enabled": False}}), "Pod")
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes(env)
    with pytest.raises(helm.HelmRenderError) as info:
        render_values({"helmTest": {"family": "billing"}})
    assert 'helmTest.family "billing" is not an enabled family' in str(info.value)


def test_helm_test_script_waits_for_ready_and_fails_when_a_service_never_is(tmp_path: Path) -> None:
    """The Pod's script, run as the Pod runs it (python -c SCRIPT TIMEOUT URL...), against real
    HTTP servers: one not ready at first (503, then 200), one that never becomes ready."""
    (pod,) = of_kind(render(), "Pod").values()
    command, args = pod["spec"]["containers"][0]["command"], pod["spec"]["containers"][0]["args"]
    assert command == ["python", "-c"]
    asked: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked[self.path] = asked.get(self.path, 0) + 1
            ready = self.path == "/soon/readyz" and asked[self.path] > 1
            self.send_response(200 if ready else 503)
            self.end_headers()
            self.wfile.write(b'{"ready": %s}' % (b"true" if ready else b"false"))

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ok = subprocess.run(
            [sys.executable, "-c", args[0], "10", f"{base}/soon/readyz"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
        assert asked["/soon/readyz"] == 2 and '"ready": true' in ok.stdout
        never = subprocess.run(
            [sys.executable, "-c", args[0], "3", f"{base}/soon/readyz", f"{base}/never/readyz"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert never.returncode == 1
        assert f"{base}/never/readyz FAILED" in never.stderr and "503" in never.stderr
    finally:
        server.shutdown()


def test_keda_reading_the_bundled_redis_behind_a_network_policy_is_let_through() -> None:
    values: dict[str, Any] = {
        "keda": {"enabled": True},
        "bundled": {"redis": {"enabled": True}},
        "networkPolicy": {"enabled": True},
    }
    with pytest.raises(helm.HelmRenderError) as info:
        render_values(values)
    assert "set networkPolicy.redisFrom to KEDA's namespace" in str(info.value)
    keda = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}]
    values["networkPolicy"]["redisFrom"] = keda
    policy = of_kind(render_values(values), "NetworkPolicy")[component("redis")]
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    (rule,) = policy["spec"]["ingress"]
    release = {"app.kubernetes.io/name": "tq", "app.kubernetes.io/instance": RELEASE}
    assert rule["from"] == [{"podSelector": {"matchLabels": release}}, *keda]
