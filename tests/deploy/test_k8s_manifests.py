"""The Kubernetes manifests validate against the API schemas and agree with each other and with deploy/."""

from __future__ import annotations

import copy
import re
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.sources import DEPLOY, K8S

# A version kubernetes-validate ships schemas for; strict mode rejects unknown fields.
KUBERNETES_VERSION = "1.31.0"
OPERATOR_API = "monitoring.coreos.com/v1"

Doc = tuple[str, dict[str, Any]]


def of_kind(docs: list[Doc], kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in docs if doc["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    return doc


def config_value(docs: list[Doc], key: str) -> str:
    value: str = named(docs, "ConfigMap", "hub-config")["data"][key]
    return value


def hub_deployments(docs: list[Doc]) -> list[dict[str, Any]]:
    return [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] in ("hub-ws", "hub-ingest")]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def test_core_manifests_validate_against_the_kubernetes_schemas(
    kubernetes_validate: ModuleType, k8s_docs: list[Doc]
) -> None:
    core = [(name, doc) for name, doc in k8s_docs if doc["apiVersion"] != OPERATOR_API]
    assert len(core) >= 12
    for name, doc in core:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        # ValidationError, or SchemaNotFoundError for a kind or apiVersion the API does not have.
        except Exception as error:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {error}")


def test_the_schema_check_rejects_a_misspelt_field(kubernetes_validate: ModuleType, k8s_docs: list[Doc]) -> None:
    deployment = copy.deepcopy(named(k8s_docs, "Deployment", "hub-ws"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_operator_resources_are_a_service_monitor_and_a_prometheus_rule(k8s_docs: list[Doc]) -> None:
    kinds = sorted(doc["kind"] for _, doc in k8s_docs if doc["apiVersion"] == OPERATOR_API)
    assert kinds == ["PrometheusRule", "ServiceMonitor"]


def test_prometheus_rule_carries_exactly_the_groups_of_alerts_yml(k8s_docs: list[Doc], alerts: dict[str, Any]) -> None:
    rule = named(k8s_docs, "PrometheusRule", "hub")
    assert rule["spec"]["groups"] == alerts["groups"], "run `make k8s-rules` after editing alerts.yml"


def test_kustomization_lists_every_manifest_and_only_those(yaml: ModuleType) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    assert not list(K8S.glob("*.yml")), "use .yaml, so the kustomization check sees every file"


def test_kustomization_image_names_the_image_the_deployments_use(yaml: ModuleType, k8s_docs: list[Doc]) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    names = {image["name"] for image in kustomization["images"]}
    for deployment in hub_deployments(k8s_docs):
        assert container(deployment)["image"].split(":")[0] in names


@pytest.mark.parametrize("name,role", [("hub-ws", "ws"), ("hub-ingest", "ingest")])
def test_deployment_runs_its_role_with_config_and_secret(k8s_docs: list[Doc], name: str, role: str) -> None:
    hub = container(named(k8s_docs, "Deployment", name))
    assert hub["command"] == ["hub", role]
    sources = {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in hub["envFrom"]}
    assert sources == {"hub-config", "hub-app"}


def test_deployments_probe_ready_for_readiness_and_root_for_liveness(k8s_docs: list[Doc]) -> None:
    for deployment in hub_deployments(k8s_docs):
        hub = container(deployment)
        assert hub["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert hub["livenessProbe"]["httpGet"]["path"] == "/"


def test_grace_period_outlasts_the_prestop_pause_and_the_drain(k8s_docs: list[Doc]) -> None:
    drain = float(config_value(k8s_docs, "HUB_DRAIN_SECONDS"))
    for deployment in hub_deployments(k8s_docs):
        pod = deployment["spec"]["template"]["spec"]
        pre_stop = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        # Room left after preStop and the drain for the node to clean its sockets out of Redis.
        assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain + 5


def test_deployments_set_requests_and_limits(k8s_docs: list[Doc]) -> None:
    for deployment in of_kind(k8s_docs, "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
            assert {"cpu", "memory"} <= c["resources"]["limits"].keys()


def test_pods_run_as_the_non_root_user_of_the_image(k8s_docs: list[Doc]) -> None:
    dockerfile_user = re.search(r"^USER (\d+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert dockerfile_user
    for deployment in of_kind(k8s_docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for deployment in hub_deployments(k8s_docs):
        run_as = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        assert str(run_as) == dockerfile_user.group(1)


def test_services_select_their_deployments_pods(k8s_docs: list[Doc]) -> None:
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in of_kind(k8s_docs, "Deployment")]
    for service in of_kind(k8s_docs, "Service"):
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in pods), service["metadata"]["name"]


def test_ingress_routes_app_to_ws_and_apps_to_ingest(k8s_docs: list[Doc]) -> None:
    (ingress,) = of_kind(k8s_docs, "Ingress")
    routes = {
        path["path"]: (path["pathType"], path["backend"]["service"]["name"])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routes == {"/app": ("Prefix", "hub-ws"), "/apps": ("Prefix", "hub-ingest")}
    services = {s["metadata"]["name"] for s in of_kind(k8s_docs, "Service")}
    assert {"hub-ws", "hub-ingest"} <= services
    timeout = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
    assert int(timeout) > 120, "longer than pusher-js's 120 s activity timeout"


def test_autoscaler_scales_the_ws_deployment_and_owns_its_replicas(k8s_docs: list[Doc]) -> None:
    (hpa,) = of_kind(k8s_docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hub-ws"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in named(k8s_docs, "Deployment", "hub-ws")["spec"]


def test_disruption_budgets_cover_both_roles(k8s_docs: list[Doc]) -> None:
    covered = set()
    for pdb in of_kind(k8s_docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"].items()
        for deployment in hub_deployments(k8s_docs):
            if selector <= deployment["spec"]["template"]["metadata"]["labels"].items():
                covered.add(deployment["metadata"]["name"])
    assert covered == {"hub-ws", "hub-ingest"}


def test_service_monitor_scrapes_the_metrics_port_of_both_hub_services(k8s_docs: list[Doc]) -> None:
    monitor = named(k8s_docs, "ServiceMonitor", "hub")
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    scraped = [s for s in of_kind(k8s_docs, "Service") if selector <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["name"] for s in scraped) == ["hub-ingest", "hub-ws"]
    (endpoint,) = monitor["spec"]["endpoints"]
    for service in scraped:
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert ports[endpoint["port"]] == int(config_value(k8s_docs, "HUB_METRICS_PORT"))


def test_config_holds_hub_settings_and_the_secret_the_default_app(k8s_docs: list[Doc]) -> None:
    config = named(k8s_docs, "ConfigMap", "hub-config")["data"]
    assert all(key.startswith("HUB_") for key in config)
    assert config["HUB_REDIS_URL"] == "redis://redis:6379/0"
    secret = named(k8s_docs, "Secret", "hub-app")["stringData"]
    assert set(secret) == {"PUSHER_APP_ID", "PUSHER_APP_KEY", "PUSHER_APP_SECRET"}
