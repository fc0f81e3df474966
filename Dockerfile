# syntax=docker/dockerfile:1
# One image for every JivaPay process. The command picks the role:
#   jivapay serve --role gateway|merchant|trader|teamlead|support|admin --host 0.0.0.0
#   jivapay worker [--metrics-port 9100]      jivapay beat      jivapay intake-feed
#   jivapay db upgrade
# Build: docker build -t jivapay:$(git rev-parse --short HEAD) .

ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------- build: wheels in a virtualenv
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first: this layer is reused until pyproject.toml changes.
COPY pyproject.toml README.md ./
COPY jivapay ./jivapay
RUN pip install --no-compile . \
    && pip uninstall -y pip setuptools wheel

# ---------------------------------------------------------------- runtime: no compiler, no root
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production \
    LOG_JSON=true \
    JIVAPAY_HOME=/var/lib/jivapay \
    PROMETHEUS_MULTIPROC_DIR=/tmp/jivapay-metrics
RUN groupadd --system --gid 10001 jivapay \
    && useradd --system --uid 10001 --gid jivapay --home-dir /var/lib/jivapay --shell /usr/sbin/nologin jivapay \
    && mkdir -p /var/lib/jivapay \
    && chown jivapay:jivapay /var/lib/jivapay
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# Role servers listen on 8001-8006; worker metrics on 9100.
EXPOSE 8001 8002 8003 8004 8005 8006 9100
# uvicorn and Celery both stop gracefully on SIGTERM (drain / warm shutdown).
STOPSIGNAL SIGTERM
ENTRYPOINT ["jivapay"]
CMD ["serve", "--role", "gateway", "--host", "0.0.0.0"]
