"""Every kustomization under k8s/ renders with kubectl and is what a cluster accepts: core resources pass
`kubernetes-validate --strict`, custom resources are named in CRD_KINDS (their schemas are not in
kubernetes-validate) and checked here for the fields that matter; and the manifests keep their promises:
least privilege, no secret in a ConfigMap, default deny, only Envoy's TLS port in the gateway Service."""

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from support.kustomize import K8S, REPO, Manifest, find, render

from extauth.config.schema import url_carries_credentials

KUBERNETES_VERSION = "1.33"
CORE_KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/prod", "shared-service"]
#: Resources of other projects' CRDs, which kubernetes-validate has no schema for: each is expected only in the
#: kustomizations listed, and the tests below check the fields extauth relies on.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring",
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): "integrations/envoy-gateway",
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): "integrations/envoy-gateway",
    ("gateway.networking.k8s.io/v1", "BackendTLSPolicy"): "integrations/envoy-gateway",
    ("security.istio.io/v1", "AuthorizationPolicy"): "integrations/istio",
    ("networking.istio.io/v1", "DestinationRule"): "integrations/istio",
}
CRD_KUSTOMIZATIONS = sorted(set(CRD_KINDS.values()))
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
SECRET_LOOKING = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY|rediss?(?:\+cluster)?://[^\s/@]*:[^\s@/]+@|"
                            r"(?:password|secret|client_secret|hmac_key)\s*:\s*[^\s#]", re.IGNORECASE)


@pytest.fixture(scope="module", params=CORE_KUSTOMIZATIONS)
def core(request: pytest.FixtureRequest) -> list[Manifest]:
    return render(K8S / request.param)


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] in WORKLOAD_KINDS]


def test_core_resources_pass_strict_schema_validation(core: list[Manifest]) -> None:
    """Every resource of base, dev, prod and shared-service is a core kind and valid against its schema."""
    for manifest in core:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kustomization", CRD_KUSTOMIZATIONS)
def test_crd_kustomizations_hold_only_the_listed_custom_kinds_and_valid_core_ones(kustomization: str) -> None:
    """monitoring and integrations render; each resource is a listed CRD kind of that folder or strictly valid."""
    for manifest in render(K8S / kustomization):
        key = (manifest["apiVersion"], manifest["kind"])
        if key in CRD_KINDS:
            assert CRD_KINDS[key] == kustomization, f"{key} is expected in {CRD_KINDS[key]}"
        else:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_every_container_runs_with_least_privilege(core: list[Manifest]) -> None:
    """Non-root, seccomp RuntimeDefault, read-only root, no escalation, no capabilities, no API token, bounded."""
    for workload in workloads(core):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            context = container["securityContext"]
            where = f"{name} container {container['name']}"
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            assert "readinessProbe" in container or "livenessProbe" in container, where
            assert all("subPath" not in mount for mount in container.get("volumeMounts", [])), where


def test_every_namespaced_resource_lands_in_the_extauth_namespace(core: list[Manifest]) -> None:
    """Overlay resources too: a Redis or NetworkPolicy applied to another namespace protects nothing there."""
    for manifest in (m for m in core if m["kind"] != "Namespace"):
        assert manifest["metadata"].get("namespace") == "extauth", (manifest["kind"], manifest["metadata"]["name"])


def test_service_accounts_have_no_token_and_no_rbac_exists(core: list[Manifest]) -> None:
    """No ServiceAccount token is mounted by default and no Role or binding is shipped."""
    kinds = {manifest["kind"] for manifest in core}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    for account in (m for m in core if m["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_namespace_denies_ingress_and_egress_by_default_and_resolves_dns_only_via_kube_dns(
        core: list[Manifest]) -> None:
    """default-deny selects every pod for both directions; the DNS policy allows port 53 to kube-dns only."""
    deny = find(core, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = find(core, "NetworkPolicy", "dns-to-kube-dns")["spec"]["egress"]
    assert [peer["podSelector"]["matchLabels"] for rule in dns for peer in rule["to"]] == [{"k8s-app": "kube-dns"}]
    assert {port["port"] for rule in dns for port in rule["ports"]} == {53}


def test_no_configmap_carries_secret_material(core: list[Manifest]) -> None:
    """Keys, passwords and credentialed URLs live in Secrets, never in ConfigMaps."""
    for config_map in (m for m in core if m["kind"] == "ConfigMap"):
        for key, text in config_map.get("data", {}).items():
            assert not SECRET_LOOKING.search(text), f"ConfigMap {config_map['metadata']['name']} key {key}"


@pytest.mark.parametrize("text", ["password: hunter2", "-----BEGIN RSA PRIVATE KEY-----",
                                  "-----BEGIN PRIVATE KEY-----", "Client_Secret: abc"])
def test_the_secret_detector_recognises_keys_and_secret_fields(text: str) -> None:
    """The ConfigMap check above fires on PEM private keys and secret-named fields."""
    assert SECRET_LOOKING.search(text)


@given(scheme=st.sampled_from(["redis", "rediss", "redis+cluster", "rediss+cluster", "REDIS", "Rediss+Cluster"]),
       user=st.text(alphabet="abcxyz-_", max_size=5), password=st.text(alphabet="hunter2!%$*", min_size=1),
       host=st.sampled_from(["redis", "10.0.0.1:6379", "a:1,b:2"]))
def test_the_secret_detector_recognises_every_credentialed_redis_url(scheme: str, user: str, password: str,
                                                                      host: str) -> None:
    """Any Redis URL scheme extauth accepts, with or without a user name, is caught when it has a password."""
    assert SECRET_LOOKING.search(f"backend: {scheme}://{user}:{password}@{host}/0")


@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/prod"])
def test_the_gateway_service_exposes_only_envoys_tls_port(overlay: str) -> None:
    """The gateway Service has one port, Envoy's https; extauth's socket and metrics are not in it."""
    manifests = render(K8S / overlay)
    service = find(manifests, "Service", "gateway")
    assert [(port["port"], port["targetPort"]) for port in service["spec"]["ports"]] == [(443, "https")]
    gateway = find(manifests, "Deployment", "gateway")["spec"]["template"]["spec"]
    envoy = next(container for container in gateway["containers"] if container["name"] == "envoy")
    assert next(p for p in envoy["ports"] if p["name"] == "https")["containerPort"] == 8443
    ingress = find(manifests, "NetworkPolicy", "gateway-ingress-tls")["spec"]["ingress"]
    assert ingress == [{"ports": [{"protocol": "TCP", "port": 8443}]}]


def test_no_secret_is_on_a_command_line_or_in_a_plain_environment_variable(core: list[Manifest]) -> None:
    """Command lines are in the pod spec, `ps` and /proc: no container passes a credential (or the Redis URL at all)
    in its command, args or a literal env value."""
    for workload in workloads(core):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            where = f"{workload['metadata']['name']} container {container['name']}"
            words = [*container.get("command", []), *container.get("args", []),
                     *(variable["value"] for variable in container.get("env", []) if "value" in variable)]
            assert not any(SECRET_LOOKING.search(word) or url_carries_credentials(word) for word in words), where
            assert "--rate-limit-backend" not in words, where


@pytest.mark.parametrize(("kustomization", "workload"), [("overlays/dev", "gateway"), ("overlays/prod", "gateway"),
                                                         ("shared-service", "extauth")])
def test_extauth_reads_the_redis_url_from_the_secret_mounted_where_its_config_says(kustomization: str,
                                                                                    workload: str) -> None:
    """The config in the ConfigMap names rate_limit.backend_file, and that path is the `url` key of the Secret
    extauth-redis (generated with a hashed name in dev, the operator's own elsewhere)."""
    manifests = render(K8S / kustomization)
    pod = find(manifests, "Deployment", workload)["spec"]["template"]["spec"]
    extauth = next(container for container in pod["containers"] if container["name"] == "extauth")
    config_path = Path(extauth["args"][extauth["args"].index("--config") + 1])
    mount = next(m for m in extauth["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    config_map = next(v for v in pod["volumes"] if v["name"] == mount["name"])["configMap"]["name"]
    config = yaml.safe_load(find(manifests, "ConfigMap", config_map)["data"][config_path.name])
    backend_file = Path(config["rate_limit"]["backend_file"])
    assert not {"backend", "backend_env"} & set(config["rate_limit"])
    secret_mount = next(m for m in extauth["volumeMounts"] if m["mountPath"] == str(backend_file.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == secret_mount["name"])["secret"]
    assert re.fullmatch(r"extauth-redis(-[a-z0-9]{10})?", volume["secretName"])
    assert volume["items"] == [{"key": "url", "path": backend_file.name}]


@pytest.mark.parametrize("copy", ["base/policies", "shared-service/policies"])
def test_k8s_policies_are_the_shipped_demo_policies(copy: str) -> None:
    """kustomize reads files only inside k8s/, so the policies are copies: the same bytes as envoy/policies."""
    shipped = {path.name: path.read_bytes() for path in (REPO / "envoy" / "policies").glob("*.yaml")}
    copied = {path.name: path.read_bytes() for path in (K8S / copy).glob("*.yaml")}
    assert copied == shipped


def test_alerts_cover_each_failure_the_issue_names_and_use_existing_metrics() -> None:
    """The PrometheusRule alerts on unavailability, denial spikes, degraded rate limits, dropped audit events,
    stale JWKS and failed policy reloads, and every metric it names is documented in docs/metrics.md."""
    monitoring = render(K8S / "monitoring")
    rules = find(monitoring, "PrometheusRule", "extauth")["spec"]["groups"][0]["rules"]
    assert {rule["alert"] for rule in rules} == {
        "ExtauthUnavailable", "ExtauthDenialSpike", "ExtauthRateLimitBackendDegraded", "ExtauthAuditEventsDropped",
        "ExtauthJwksStale", "ExtauthPolicyReloadFailed"}
    documented = set(re.findall(r"`(extauth_[a-z_]+)`", (REPO / "docs" / "metrics.md").read_text()))
    dashboard = json.loads(find(monitoring, "ConfigMap", "extauth-grafana-dashboard")["data"]["extauth-dashboard.json"])
    expressions = [rule["expr"] for rule in rules]
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for expr in expressions
            for name in re.findall(r"\bextauth_[a-z_]+", expr)}
    assert used and used <= documented, used - documented
    monitor = find(monitoring, "ServiceMonitor", "extauth")["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"
    for overlay in ("base", "shared-service"):
        metrics = [m for m in render(K8S / overlay) if m["kind"] == "Service"
                   and m["metadata"]["labels"].get("app.kubernetes.io/component") == "metrics"]
        assert [port["name"] for service in metrics for port in service["spec"]["ports"]] == ["metrics"], overlay


def test_integrations_call_the_shared_service_fail_closed() -> None:
    """Envoy Gateway's SecurityPolicy and Istio's provider point at the shared Service's gRPC port, fail closed."""
    shared = find(render(K8S / "shared-service"), "Service", "extauth")["spec"]["ports"]
    grpc_port = next(port["port"] for port in shared if port["name"] == "grpc")
    policy = find(render(K8S / "integrations" / "envoy-gateway"), "SecurityPolicy", "app-extauth")["spec"]["extAuth"]
    assert policy["failOpen"] is False
    assert policy["grpc"]["backendRefs"] == [{"name": "extauth", "namespace": "extauth", "port": grpc_port}]
    assert {item["name"] for item in policy["contextExtensions"]} == {"service", "route"}
    istio = render(K8S / "integrations" / "istio")
    authorization = find(istio, "AuthorizationPolicy", "app-extauth")["spec"]
    assert authorization["action"] == "CUSTOM"
    mesh = yaml.safe_load((K8S / "integrations" / "istio" / "mesh-config.yaml").read_text())
    providers = {p["name"]: p for p in mesh["spec"]["meshConfig"]["extensionProviders"]}
    provider = providers[authorization["provider"]["name"]]["envoyExtAuthzGrpc"]
    assert provider["service"] == "extauth.extauth.svc.cluster.local"
    assert provider["port"] == grpc_port
    assert provider["failOpen"] is False


def test_istio_sidecars_use_the_client_certificate_secret_of_their_own_namespace() -> None:
    """Istio applies a DestinationRule's credentialName at sidecars only with a workloadSelector, and reads the
    Secret from the proxies' namespace: the rule selects the AuthorizationPolicy's workloads, in their namespace."""
    istio = render(K8S / "integrations" / "istio")
    authorization = find(istio, "AuthorizationPolicy", "app-extauth")
    rule = find(istio, "DestinationRule", "extauth")
    assert rule["spec"]["trafficPolicy"]["tls"]["mode"] == "MUTUAL"
    assert rule["spec"]["trafficPolicy"]["tls"]["credentialName"]
    assert rule["metadata"]["namespace"] == authorization["metadata"]["namespace"]
    assert rule["spec"]["workloadSelector"] == authorization["spec"]["selector"]


def test_example_secrets_name_every_secret_key_the_manifests_mount() -> None:
    """Each Secret volume item and secretKeyRef the operator creates has its example (a Secret the kustomization
    generates needs none), and every example says it is one."""
    examples = {doc["metadata"]["name"]: doc for doc in
                yaml.safe_load_all((K8S / "examples" / "secrets.example.yaml").read_text())}
    for example in examples.values():
        assert all(value.startswith("EXAMPLE") for value in example["stringData"].values())
    for kustomization in CORE_KUSTOMIZATIONS:
        manifests = render(K8S / kustomization)
        generated = {m["metadata"]["name"] for m in manifests if m["kind"] == "Secret"}
        for workload in workloads(manifests):
            pod = workload["spec"]["template"]["spec"]
            for volume in (v for v in pod.get("volumes", []) if "secret" in v
                           and v["secret"]["secretName"] not in generated):
                keys = {item["key"] for item in volume["secret"]["items"]}
                assert keys <= set(examples[volume["secret"]["secretName"]]["stringData"]), volume
            for container in pod["containers"]:
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in examples[ref["name"]]["stringData"], ref


def test_policies_configmap_keeps_its_name_so_updates_reload_in_place() -> None:
    """The policies ConfigMap has no hash suffix (an apply updates it and extauth reloads); configs do."""
    names = {m["metadata"]["name"] for m in render(K8S / "base") if m["kind"] == "ConfigMap"}
    assert "extauth-policies" in names
    assert any(Path(name).name.startswith("gateway-envoy-") for name in names)


PRIVATE_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8", "100.64.0.0/10"}
EGRESS_BOOTSTRAPS = [REPO / "envoy" / "egress.yaml",
                     K8S / "components" / "egress-gateway" / "config" / "envoy-egress.yaml"]


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_only_the_egress_gateway_reaches_public_addresses_and_only_on_443(overlay: str) -> None:
    """An `ipBlock` open to the whole internet exists only for the egress gateway's pods, excludes the private,
    shared, link-local and loopback ranges, and opens port 443 alone."""
    policies = [m for m in render(K8S / overlay) if m["kind"] == "NetworkPolicy"]
    open_to_all = [(policy, rule) for policy in policies for rule in policy["spec"].get("egress", [])
                   if any(peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0") for peer in rule["to"])]
    assert open_to_all
    for policy, rule in open_to_all:
        assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "egress-gateway"}}
        assert rule["ports"] == [{"protocol": "TCP", "port": 443}]
        v4 = next(peer["ipBlock"] for peer in rule["to"] if peer["ipBlock"]["cidr"] == "0.0.0.0/0")
        assert set(v4["except"]) >= PRIVATE_RANGES
        v6 = next(peer["ipBlock"] for peer in rule["to"] if peer["ipBlock"]["cidr"] == "::/0")
        assert set(v6["except"]) >= {"fc00::/7", "fe80::/10", "::1/128"}


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_the_egress_gateway_admits_only_labelled_workloads_on_its_mtls_port(overlay: str) -> None:
    """Its Service exposes Envoy's mTLS port alone; only pods labelled as egress clients may connect to it, and
    those pods may open nothing else but DNS (the namespace's default deny holds the rest)."""
    manifests = render(K8S / overlay)
    service = find(manifests, "Service", "egress-gateway")["spec"]["ports"]
    assert [(port["port"], port["targetPort"]) for port in service] == [(443, "mtls")]
    pod = find(manifests, "Deployment", "egress-gateway")["spec"]["template"]["spec"]
    envoy = next(container for container in pod["containers"] if container["name"] == "envoy")
    assert next(port for port in envoy["ports"] if port["name"] == "mtls")["containerPort"] == 10443
    clients = {"matchLabels": {"extauth.io/egress-client": "true"}}
    admitted = find(manifests, "NetworkPolicy", "egress-gateway-from-clients")["spec"]["ingress"]
    assert admitted == [{"from": [{"podSelector": clients}], "ports": [{"protocol": "TCP", "port": 10443}]}]
    outbound = find(manifests, "NetworkPolicy", "clients-to-egress-gateway")["spec"]
    assert outbound["podSelector"] == clients
    gateway = {"matchLabels": {"app.kubernetes.io/name": "egress-gateway"}}
    assert outbound["egress"] == [{"to": [{"podSelector": gateway}], "ports": [{"protocol": "TCP", "port": 10443}]}]


@pytest.mark.parametrize("bootstrap", EGRESS_BOOTSTRAPS, ids=lambda path: path.parent.name)
def test_egress_bootstraps_require_client_certificates_and_mark_every_route_egress(bootstrap: Path) -> None:
    """The egress listener refuses connections without a client certificate, every route tells extauth the call is
    egress (an unmarked route would be judged as ingress), and every cluster but extauth originates verified TLS."""
    resources = yaml.safe_load(bootstrap.read_text())["static_resources"]
    listener = next(item for item in resources["listeners"] if item["name"] == "egress")
    (chain,) = listener["filter_chains"]
    assert chain["transport_socket"]["typed_config"]["require_client_certificate"] is True
    manager = chain["filters"][0]["typed_config"]
    routes = [route for host in manager["route_config"]["virtual_hosts"] for route in host["routes"]]
    assert routes
    for route in routes:
        settings = route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"]
        assert settings["context_extensions"]["direction"] == "egress", route
    for cluster in (c for c in resources["clusters"] if c["name"] != "extauth"):
        tls = cluster["transport_socket"]["typed_config"]
        sans = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
        assert [san["matcher"]["exact"] for san in sans] == [tls["sni"]], cluster["name"]
