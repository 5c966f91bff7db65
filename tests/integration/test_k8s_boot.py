"""The dev overlay boots: its pods' processes, started exactly as the rendered manifests say, serve requests.

The test plays the kubelet for the gateway, demo-upstream and Redis pods of `kubectl kustomize k8s/overlays/dev`:
it writes each ConfigMap's data where the pod mounts it and fills each Secret volume (generated, or the dev PKI),
then runs every container's `command` + `args` (with `$(VAR)` expanded from its `env`) in one fresh network namespace,
so the ports are the pod's own. Only two things differ from a cluster: mount paths live under a temporary root
(each mountPath in args and in the mounted files is prefixed with it), and /etc/hosts, bind-mounted in the
namespace, resolves the Services' names to the namespace's loopback. This is what catches manifests that do not
match the config they carry (a path, a port, a socket or a probe that no longer line up).
"""

import base64
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.kustomize import K8S, Manifest, find, render

from extauth.devstack.envoy import find_envoy
from extauth.devtools.certs import DevCerts, create_dev_certs

NAMESPACE = "extauth"
SERVICES = ("demo-upstream", "redis")
#: Which file of `extauth dev-certs` each Secret key of the manifests holds (k8s/examples/secrets.example.yaml).
SECRET_KEY_FILES = {"tls.crt": "server.crt", "tls.key": "server.key", "ca.crt": "ca.crt", "jwks.json": "jwks.json",
                    "upstream.crt": "upstream.crt", "upstream.key": "upstream.key"}
#: Secrets the operator creates that hold no file of the dev PKI: a stand-in value (the shared service's Redis).
SECRET_KEY_VALUES = {"url": "rediss://:dev-password@redis.extauth.svc.cluster.local:6380/0\n"}
ENV_REFERENCE = re.compile(r"\$\((\w+)\)")
CLIENT = """
import http.client, ssl, sys
port, path, ca, token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=ca) if ca else None
connection = (http.client.HTTPSConnection("localhost", int(port), context=context, timeout=5) if ca
              else http.client.HTTPConnection("localhost", int(port), timeout=5))
try:
    connection.request("GET", path, headers={"authorization": f"Bearer {token}"} if token else {})
    print(connection.getresponse().status)
except OSError as error:
    print(f"error {error}")
"""


class Pod:
    """One network namespace (and mount namespace, for /etc/hosts) that every container process joins."""

    def __init__(self, root: Path) -> None:
        self.root = root
        hosts = root / "hosts"
        names = " ".join(f"{service} {service}.{NAMESPACE}.svc {service}.{NAMESPACE}.svc.cluster.local"
                         for service in SERVICES)
        hosts.write_text(f"127.0.0.1 localhost {names}\n::1 localhost\n")
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "sh", "-c",
             f"ip link set lo up && mount --bind {hosts} /etc/hosts && echo ready && exec sleep 300"],
            stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        assert self.holder.stdout.readline().strip() == "ready", "could not set up the pod's namespaces"
        self.processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def enter(self, *command: str) -> list[str]:
        return ["nsenter", "--target", str(self.holder.pid), "--net", "--mount", "--", *command]

    def start(self, name: str, command: list[str]) -> None:
        log = self.root / f"{name}.log"
        process = subprocess.Popen(self.enter(*command), stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append((name, process, log))

    def get(self, port: int, path: str, ca: Path | None = None, token: str = "") -> str:
        result = subprocess.run(self.enter(sys.executable, "-c", CLIENT, str(port), path, str(ca or ""), token),
                                capture_output=True, text=True, check=False, timeout=30)
        return result.stdout.strip() or result.stderr.strip()

    def logs(self) -> str:
        return "\n".join(f"--- {name} (exit {process.poll()}):\n{log.read_text()[-3000:]}"
                         for name, process, log in self.processes)

    def stop(self) -> None:
        for _, process, _ in self.processes:
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.holder.kill()
        self.holder.wait()


def executable(name: str) -> str:
    """The image's program on this machine: Envoy from `.tools`, extauth from this venv, Redis from Debian."""
    if name == "envoy":
        return str(find_envoy())
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed (`make test` installs it)"
    return found


def under_root(text: str, root: Path, mount_paths: list[str]) -> str:
    """Each mount path (a whole path component, not `/tmpfoo`) moved under `root`, in one pass."""
    if not mount_paths:
        return text
    alternatives = "|".join(re.escape(path) for path in sorted(mount_paths, key=len, reverse=True))
    return re.sub(rf"(?<![\w/.-])(?:{alternatives})(?=/|[^\w.-]|$)", lambda match: f"{root}{match.group()}", text)


def mount_volumes(manifests: list[Manifest], pod_spec: Manifest, container: Manifest, root: Path,
                  certs: DevCerts) -> None:
    """What the kubelet would mount, under `root`: ConfigMap data as files; Secret items from the Secret when the
    kustomization generates it, else from the dev PKI (or a stand-in value)."""
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    mount_paths = [mount["mountPath"] for mount in container.get("volumeMounts", [])]
    for mount in container.get("volumeMounts", []):
        assert "subPath" not in mount, f"{mount['name']}: subPath mounts never see ConfigMap updates"
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = find(manifests, "ConfigMap", volume["configMap"]["name"])["data"]
            for key, text in data.items():
                (target / key).write_text(under_root(text, root, mount_paths))
        elif "secret" in volume:
            generated = [m for m in manifests if m["kind"] == "Secret"
                         and m["metadata"]["name"] == volume["secret"]["secretName"]]
            for item in volume["secret"]["items"]:
                if generated:
                    (target / item["path"]).write_bytes(base64.b64decode(generated[0]["data"][item["key"]]))
                elif item["key"] in SECRET_KEY_VALUES:
                    (target / item["path"]).write_text(SECRET_KEY_VALUES[item["key"]])
                else:
                    shutil.copy(certs.ca_cert.parent / SECRET_KEY_FILES[item["key"]], target / item["path"])
        else:
            assert "emptyDir" in volume, f"volume {mount['name']}: unexpected kind {volume}"


def container_command(manifests: list[Manifest], workload: Manifest, container_name: str, root: Path,
                      certs: DevCerts) -> list[str]:
    pod_spec = workload["spec"]["template"]["spec"]
    container = next(c for c in pod_spec["containers"] if c["name"] == container_name)
    mount_volumes(manifests, pod_spec, container, root, certs)
    env = {variable["name"]: variable["value"] for variable in container.get("env", [])}
    mount_paths = [mount["mountPath"] for mount in container.get("volumeMounts", [])]
    command = [*container["command"], *container.get("args", [])]
    expanded = [ENV_REFERENCE.sub(lambda match: env[match.group(1)], part) for part in command]
    return [executable(expanded[0]), *(under_root(part, root, mount_paths) for part in expanded[1:])]


def container_port(container: Manifest, name: str) -> int:
    return next(port["containerPort"] for port in container["ports"] if port["name"] == name)


@pytest.fixture(scope="module")
def dev_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pod, Manifest, DevCerts]]:
    if os.geteuid() != 0:
        pytest.fail("the boot test makes network namespaces and needs root (as `make test` and CI run)")
    manifests = render(K8S / "overlays" / "dev")
    root = tmp_path_factory.mktemp("pod")
    certs = create_dev_certs(root / "dev-certs")
    pod = Pod(root)
    gateway = find(manifests, "Deployment", "gateway")
    try:
        for kind, workload, container in [("StatefulSet", "redis", "redis"),
                                          ("Deployment", "demo-upstream", "demo-upstream"),
                                          ("Deployment", "gateway", "extauth"),
                                          ("Deployment", "gateway", "envoy")]:
            pod.start(f"{workload}-{container}", container_command(
                manifests, find(manifests, kind, workload), container, root, certs))
        yield pod, gateway, certs
    finally:
        pod.stop()


def wait_ready(pod: Pod, gateway: Manifest) -> None:
    """Until the rendered readiness probe of the Envoy container passes, as the kubelet would ask it."""
    envoy = next(c for c in gateway["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy")
    probe = envoy["readinessProbe"]["httpGet"]
    port = container_port(envoy, probe["port"])
    deadline = time.monotonic() + 30
    while (answer := pod.get(port, probe["path"])) != "200":
        assert time.monotonic() < deadline, f"readiness probe: {answer}\n{pod.logs()}"
        time.sleep(0.2)


def dev_token(certs: DevCerts) -> str:
    result = subprocess.run([executable("extauth"), "token", "--key", str(certs.jwt_signing_key), "--sub", "alice",
                             "--claim", "roles=reader"], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_dev_overlay_boots_and_answers_200_with_a_dev_token_and_401_without(
        dev_pod: tuple[Pod, Manifest, DevCerts]) -> None:
    """Envoy, extauth, Redis and the demo upstream run from the rendered dev overlay and decide requests."""
    pod, gateway, certs = dev_pod
    wait_ready(pod, gateway)
    envoy = next(c for c in gateway["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy")
    https = container_port(envoy, "https")
    assert pod.get(https, "/api/orders", certs.ca_cert, dev_token(certs)) == "200", pod.logs()
    assert pod.get(https, "/api/orders", certs.ca_cert) == "401", pod.logs()


def test_dev_gateway_counts_in_the_redis_its_generated_secret_names(
        dev_pod: tuple[Pod, Manifest, DevCerts]) -> None:
    """extauth reads the Redis URL from the mounted Secret file (never its command line) and counts there: a
    limited request leaves a counter in the pod's Redis (Redis down would count in-process, leaving none)."""
    pod, gateway, certs = dev_pod
    wait_ready(pod, gateway)
    envoy = next(c for c in gateway["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy")
    assert pod.get(container_port(envoy, "https"), "/api/limited", certs.ca_cert, dev_token(certs)) == "200"
    counters = subprocess.run(pod.enter(executable("redis-cli"), "-p", "6379", "--scan"), capture_output=True,
                              text=True, check=False, timeout=30)
    assert counters.stdout.split(), f"{counters.stdout}{counters.stderr}\n{pod.logs()}"


def test_shared_service_config_validates_with_the_files_its_pod_mounts(tmp_path: Path) -> None:
    """`extauth validate` accepts the shared service's config once its ConfigMaps and Secrets are mounted:
    mutual TLS on the TCP listener, keys, JWKS and policies all where the config says."""
    manifests = render(K8S / "shared-service")
    workload = find(manifests, "Deployment", "extauth")
    container = workload["spec"]["template"]["spec"]["containers"][0]
    mount_volumes(manifests, workload["spec"]["template"]["spec"], container, tmp_path,
                  create_dev_certs(tmp_path / "dev-certs"))
    config = container["args"][container["args"].index("--config") + 1]
    result = subprocess.run([executable("extauth"), "validate", f"{tmp_path}{config}"], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
