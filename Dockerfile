# syntax=docker/dockerfile:1.7
# The schemashift image: CLI, operator and migration runner, with the PostgreSQL 18 client tools
# (pg_dump/pg_restore 18 dump and restore every server version schemashift supports, 12-18).
#
#   docker build -t ghcr.io/schemashift/schemashift:0.1.0 .
#
# Base images are pinned to an exact Debian 13 (trixie) based Python patch release; bump all
# three FROM lines together.

# --- build: a wheel of schemashift and of every dependency (no compilers reach the final image)
FROM python:3.11.14-slim-trixie AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- pgdg: the PostgreSQL apt repository's signing key, checked against its fingerprint
FROM python:3.11.14-slim-trixie AS pgdg
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PGDG_KEY_FINGERPRINT=B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc -o /tmp/pgdg.asc \
 && gpg --show-keys --with-colons /tmp/pgdg.asc | grep -q "^fpr:*${PGDG_KEY_FINGERPRINT}:" \
 && gpg --dearmor --output /pgdg.gpg /tmp/pgdg.asc

# --- final image
FROM python:3.11.14-slim-trixie
ARG PG_MAJOR=18
COPY --from=pgdg /pgdg.gpg /usr/share/keyrings/pgdg.gpg
# The client package's version follows PGDG's point releases; the major version is what we pin.
# hadolint ignore=DL3008
RUN echo "deb [signed-by=/usr/share/keyrings/pgdg.gpg] https://apt.postgresql.org/pub/repos/apt trixie-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/schemashift-*.whl
RUN groupadd --system --gid 10001 schemashift \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin schemashift
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    SCHEMASHIFT_PG_BINDIR=/usr/lib/postgresql/${PG_MAJOR}/bin
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["schemashift"]
CMD ["--help"]
