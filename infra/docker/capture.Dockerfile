# The capture service image, run by ECS Fargate (infra/modules/capture). Build from the repository
# root:  docker build -f infra/docker/capture.Dockerfile -t totes-cdc-capture .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PGSSLROOTCERT=/app/rds-ca.pem

WORKDIR /app

# The runtime dependencies exactly as pinned in pyproject.toml (the one list of pins).
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/pyproject.toml

# The RDS certificate authorities, so sslmode=verify-full can check the source's certificate.
ADD --chmod=444 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /app/rds-ca.pem

# The source tree as in the repository: totes_cdc.settings finds infra/settings.json beside it.
COPY infra/settings.json infra/settings.json
COPY totes_cdc totes_cdc
COPY totes_ops totes_ops
COPY local_aws local_aws
COPY capture capture
COPY stream_processors stream_processors
COPY warehouse_loader warehouse_loader
COPY dashboard dashboard
COPY infra/docker/capture_health.py capture_health.py
RUN python -m compileall -q /app && useradd --system --uid 10001 --no-create-home totes

# ECS runs it with a read-only root filesystem; the state folder and /tmp are task volumes.
USER 10001
ENTRYPOINT ["python", "-m", "totes_ops"]
CMD ["capture"]
