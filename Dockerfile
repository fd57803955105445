# syntax=docker/dockerfile:1
# One image for every tq component; the command picks it (`tq worker`, `tq migrate`, ...).
#   docker build -t tq .
#   docker run --rm -e TQ_REDIS_URL=redis://redis:6379/0 tq worker --family ai

# ---- builder: the project's wheel and the wheels of all its dependencies, into /wheels
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY operator ./operator

RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels /wheels/tq-*.whl

# ---- runtime: only the installed wheels, a non-root user, no build tools
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# every wheel of /wheels (tq and its pinned dependencies), from the builder only: no index
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index /wheels/*.whl \
 && useradd --uid 10001 --user-group --create-home --home-dir /home/tq --shell /usr/sbin/nologin tq \
 && install -d -o 10001 -g 10001 /app

WORKDIR /app
USER 10001:10001

ENTRYPOINT ["tq"]
CMD ["--help"]
