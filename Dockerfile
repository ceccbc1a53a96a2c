# kdserve: the CPU serving image. No torch: the server runs ONNX bundles with ONNX Runtime.
#
#   docker build -t kdserve .
#   docker run --rm -v "$PWD/runs/bundles:/bundles:ro" -p 8000:8000 kdserve
#
# Bundles are mounted at /bundles (a folder of bundle folders), or baked in at build time:
#
#   docker build --build-arg BUNDLES=runs/bundles -t kdserve:baked .
#
# Arguments after the image name are appended to `kdserve serve`: `docker run ... kdserve --port 9000`.
# docs/DEPLOY.md has the rest (GPU image, Kubernetes, sizing).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a venv holding exactly requirements/serve.lock, plus the kdserve wheel ----------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# The lock alone first, so this (slow) layer is rebuilt only when the lock changes. --no-deps:
# the lock is the complete set, so pip installs nothing it does not list.
COPY requirements/serve.lock /tmp/serve.lock
RUN python -m venv /opt/kdserve \
 && /opt/kdserve/bin/pip install --no-deps -r /tmp/serve.lock

WORKDIR /src
COPY pyproject.toml README.md ./
COPY kdserve/ kdserve/
COPY core/ core/
COPY train/ train/
COPY export/ export/
COPY serve/ serve/
COPY benchmarks/ benchmarks/
COPY bulk/ bulk/

# --no-index makes a lock that misses part of the serve extra fail the build here, instead of
# pip fetching an unpinned package; pip check then proves the set is consistent. pip itself
# is removed from the final venv: the image never installs anything at run time.
RUN /opt/kdserve/bin/pip wheel --no-deps --wheel-dir /dist . \
 && set -- /dist/kdserve-*.whl \
 && /opt/kdserve/bin/pip install --no-index "$1[serve]" \
 && /opt/kdserve/bin/pip check \
 && /opt/kdserve/bin/python -m pip uninstall --yes pip setuptools

# Bundles to bake in: a folder of bundle folders inside the build context. The default is an
# empty placeholder, so the image ships without models and expects the /bundles mount.
ARG BUNDLES=deploy/bundles
COPY ${BUNDLES}/ /bundles/
RUN rm -f /bundles/.keep

# ---- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="kdserve" \
      org.opencontainers.image.description="Distilled text classifiers behind a low-latency /classify API (ONNX Runtime, CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed uid/gid so Kubernetes' runAsUser/fsGroup (deploy/k8s) can name it.
RUN groupadd --system --gid 10001 kdserve \
 && useradd --system --uid 10001 --gid kdserve --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kdserve

COPY --from=builder /opt/kdserve /opt/kdserve
# Root-owned and read-only to the server: a bundle is verified by checksum, never rewritten.
COPY --from=builder /bundles /bundles

# HOME=/tmp: the service user has no home, and a library that wants a cache dir gets a
# writable one (Kubernetes mounts an emptyDir there under readOnlyRootFilesystem).
ENV PATH=/opt/kdserve/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    KDSERVE_PORT=8000

USER 10001:10001
EXPOSE 8000

# Liveness only (/health answers while bundles warm up); readiness is /ready, for load balancers.
# python's urllib because the slim image has no curl; any non-2xx or refused connection exits 1.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('KDSERVE_PORT', '8000'), timeout=2)"]

ENTRYPOINT ["kdserve", "serve", "--bundles", "/bundles", "--host", "0.0.0.0"]
CMD []
