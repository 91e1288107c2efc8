# dataset-audit images. Build one target at a time (docker compose builds both):
#   docker build --target api -t dataset-audit-api .       # FastAPI; also runs `alembic upgrade head`
#   docker build --target worker -t dataset-audit-worker .  # Celery worker with torch (CUDA build)
# Dependencies come from pyproject.toml alone (docker/requirements.py), with the s3 extra (s3fs, for
# STORAGE_URL=s3://...), installed before the source is copied so that a code change rebuilds only
# the last layers. See docs/DEPLOY.md.

FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DATA_DIR=/data
# A fixed uid, the same in both images, owns /data: a named volume mounted there starts with that
# owner, so the API (which writes uploads) and the workers (checkpoints) share it.
RUN groupadd --system --gid 10001 audit \
    && useradd --system --no-log-init --uid 10001 --gid audit --create-home \
        --home-dir /home/audit --shell /usr/sbin/nologin audit \
    && mkdir -p /data \
    && chown audit:audit /data
WORKDIR /srv/dataset-audit

# The runtime requirements, split: torch alone, and everything else (object storage included).
FROM base AS requirements
COPY pyproject.toml docker/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py --pyproject /tmp/build/pyproject.toml \
        --exclude torch --extra s3 -o /tmp/requirements/api.txt \
    && python /tmp/build/requirements.py --pyproject /tmp/build/pyproject.toml \
        --only torch -o /tmp/requirements/torch.txt

# The API: no torch, so the image is small and starts fast.
FROM base AS api
COPY --from=requirements /tmp/requirements/api.txt /tmp/requirements/
RUN pip install --no-cache-dir -r /tmp/requirements/api.txt
# The source stays in the working directory beside alembic.ini, whose script_location is
# %(here)s/app/migrations; the same code is installed into site-packages for the console scripts
# and the package metadata.
COPY pyproject.toml README.md alembic.ini ./
COPY app/ app/
COPY incompat/ incompat/
COPY worker/ worker/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -m compileall -q app incompat worker
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# The protocol applies the settings' limits on slow and oversized request heads and on
# connections (HTTP_HEADER_TIMEOUT_S, MAX_HEADER_BYTES, HTTP_KEEP_ALIVE_S, HTTP_MAX_CONNECTIONS).
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", \
     "--http", "app.http_limits:LimitedH11Protocol"]

# The worker: torch from PyPI, which on x86_64 Linux is the CUDA build with the CUDA runtime in
# nvidia-* wheels; the host supplies only the driver (NVIDIA container toolkit). torch gets its
# own layer, first, so that a change to the other dependencies does not download it again.
FROM base AS worker
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=requirements /tmp/requirements/torch.txt /tmp/requirements/
RUN pip install --no-cache-dir -r /tmp/requirements/torch.txt
COPY --from=requirements /tmp/requirements/api.txt /tmp/requirements/
RUN pip install --no-cache-dir -r /tmp/requirements/api.txt
COPY pyproject.toml README.md alembic.ini ./
COPY app/ app/
COPY incompat/ incompat/
COPY worker/ worker/
COPY docker/worker_healthcheck.py docker/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -m compileall -q app incompat worker
USER 10001:10001
# With --pool=solo the worker cannot answer a ping while it runs an audit: the check also takes a
# fresh heartbeat of an audit it holds as alive (docker/worker_healthcheck.py).
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD ["python", "/srv/dataset-audit/docker/worker_healthcheck.py"]
# One audit at a time per container: run one worker container per GPU.
CMD ["celery", "-A", "worker.celery_app", "worker", "--pool=solo", "--loglevel=INFO"]
