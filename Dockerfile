# duanka's scoring service, `duanka serve` (docs/container.md).
#
# Two stages: the builder installs duanka and its pinned dependencies (constraints.txt) into a
# virtual environment; the runtime copies only that environment, so no compiler, pip, build
# cache or source tree ships. No secret is baked in: the keys come at run time from the
# environment or from files their *_FILE variables name (docker secrets, docs/configuration.md).
#
#   docker build -t duanka .
#   docker run -p 8000:8000 -v duanka-data:/var/lib/duanka/data -v duanka-models:/var/lib/duanka/models \
#     -e DUANKA_PSEUDONYM_KEY_FILE=/run/secrets/pseudonym_key ... duanka
#
# Inside a bank the build reaches only internal mirrors, so every source is an argument:
#   PYTHON_IMAGE     the base image, pinned by digest for production (docs/container.md, "Pinning
#                    the base": how to read and refresh the digest)
#   PIP_INDEX_URL    a package index (a proxy of PyPI); PIP_TRUSTED_HOST if it is plain HTTP
#   APT_MIRROR       a Debian mirror for libgomp1 (http://mirror.example/debian), in place of
#                    deb.debian.org
#   docker build --build-arg PYTHON_IMAGE=registry.bank/python:3.12-slim@sha256:... \
#     --build-arg PIP_INDEX_URL=https://pypi.bank/simple --build-arg APT_MIRROR=http://apt.bank/debian .
# No BuildKit feature is used: the legacy builder and Podman build it as well.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS builder
ARG PIP_INDEX_URL=""
ARG PIP_TRUSTED_HOST=""
WORKDIR /src
RUN python3 -m venv /opt/venv
# Only what the wheel is built from: the packages pyproject.toml lists, and README.md, which it
# names as the long description. .dockerignore keeps data/store, caches and .venv out of data/.
COPY pyproject.toml constraints.txt README.md ./
COPY data/ data/
COPY features/ features/
COPY training/ training/
COPY serving/ serving/
COPY cli/ cli/
# A plain (not editable) install: the runtime copies /opt/venv alone, without /src. pip reads
# PIP_INDEX_URL and PIP_TRUSTED_HOST from the build arguments (empty: PyPI); --no-cache-dir keeps
# downloaded wheels out of the layer.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt . \
    && /opt/venv/bin/duanka --help > /dev/null


FROM ${PYTHON_IMAGE} AS runtime
ARG APT_MIRROR=""
LABEL org.opencontainers.image.title="duanka" \
      org.opencontainers.image.description="Money-mule risk scoring for account openings: duanka serve" \
      org.opencontainers.image.licenses="Apache-2.0"
# LightGBM's wheel links the system's OpenMP runtime (libgomp), which the slim image lacks.
RUN if [ -n "$APT_MIRROR" ]; then \
        sed -i "s|http://deb.debian.org/debian|$APT_MIRROR|g" /etc/apt/sources.list.d/debian.sources; \
    fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# A fixed, numeric, unprivileged user: volumes and bind mounts can be given to uid 10001 ahead of
# time, and Kubernetes' runAsNonRoot can check a number. The volume folders are created and
# owned here, before VOLUME, so a new named volume starts out writable by that user.
RUN groupadd --gid 10001 duanka \
    && useradd --uid 10001 --gid duanka --no-log-init --home-dir /home/duanka --create-home \
       --shell /usr/sbin/nologin duanka \
    && mkdir -p /var/lib/duanka/data /var/lib/duanka/models \
    && chown -R 10001:10001 /var/lib/duanka
# Owned by root, so the service cannot change its own code.
COPY --from=builder /opt/venv /opt/venv
# The event store and the service's state (its serving/ folder: API keys, online state,
# decision record) in one volume; the MLflow store (mlflow.db) and the boosters (artifacts/)
# in the other. DUANKA_DATA_DIR is also what `duanka keys create` uses without --data.
# The image has no git: MLflow would print a page of warnings looking for it at each run.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIT_PYTHON_REFRESH=quiet \
    DUANKA_DATA_DIR=/var/lib/duanka/data \
    DUANKA_MODELS_DIR=/var/lib/duanka/models
VOLUME ["/var/lib/duanka/data", "/var/lib/duanka/models"]
WORKDIR /var/lib/duanka
USER 10001:10001
EXPOSE 8000
# Ready, not just up: a verified model is loaded and the state and decision record take writes.
# python's urllib, as the slim image has no curl; urlopen raises on the 503 of "not ready".
# The start period covers loading the model and syncing the online state with a large store.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["duanka"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--data", "/var/lib/duanka/data"]
