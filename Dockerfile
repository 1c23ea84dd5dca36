# One image, several roles (worker, web, migrate, flower) that differ only by their command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TUMORLENS_HOME=/data \
    TUMORLENS_OUTPUT_DIR=/data/outputs

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so editing the source does not reinstall
# TensorFlow: install the project with empty packages, keep its dependencies.
COPY pyproject.toml README.md ./
RUN mkdir pipeline worker web \
    && touch pipeline/__init__.py worker/__init__.py web/__init__.py \
    && pip install ".[monitor]" \
    && rm -rf pipeline worker web build *.egg-info

# The source tree is the application: the store's migrations (alembic.ini, migrations/) and the
# default model (models/) are found beside the packages, so the install points at /app.
COPY . .
RUN pip install --no-deps --editable . \
    && useradd --create-home --uid 10001 tumorlens \
    && mkdir -p /data/outputs \
    && chown -R tumorlens:tumorlens /data

USER tumorlens
EXPOSE 8000
ENTRYPOINT ["tumorlens"]
CMD ["--help"]
