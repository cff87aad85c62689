# The capture service image, run by ECS Fargate (infra/modules/capture). Build from the repository
# root:  docker build -f infra/docker/capture.Dockerfile -t totes-cdc-capture .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PGSSLROOTCERT=/app/rds-ca.pem \
    NUMBA_CACHE_DIR=/tmp/numba

WORKDIR /app

# Capture's and the source check's dependencies (infra/docker/capture.requirements), exactly as
# pinned in pyproject.toml (the one list of pins).
COPY pyproject.toml infra/docker/capture.requirements /tmp/
RUN python -c "import re, tomllib; \
names = {n.strip() for n in open('/tmp/capture.requirements') if n.strip() and not n.startswith('#')}; \
pins = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(p for p in pins if re.split(r'[\[=<>!~ ;]', p, maxsplit=1)[0] in names))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/pyproject.toml /tmp/capture.requirements

# The RDS certificate authorities, so sslmode=verify-full can check the source's certificate.
ADD --chmod=444 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /app/rds-ca.pem

# The source tree as in the repository: totes_cdc.settings finds infra/settings.json beside it.
COPY infra/settings.json infra/settings.json
COPY totes_cdc totes_cdc
COPY capture capture
COPY warehouse_loader warehouse_loader
COPY infra/docker/entrypoint.py entrypoint.py
COPY infra/docker/capture_health.py capture_health.py
RUN python -m compileall -q /app && useradd --system --uid 10001 --no-create-home totes

# ECS runs it with a read-only root filesystem; the state folder and /tmp are task volumes. The
# snapshot's compiled kernels are cached in /tmp/numba (NUMBA_CACHE_DIR): a task compiles them
# once, about 0.6 s, before its first snapshot's slot (totes_cdc/snapshot_files.py load_kernels).
USER 10001
ENTRYPOINT ["python", "/app/entrypoint.py"]
CMD ["capture"]
