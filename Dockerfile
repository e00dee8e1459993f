# Anjeon service image: slim Python 3.11, non-root, migrates then serves.
# Dependencies come from requirements.lock (exact versions with hashes); see docs/operations.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ANJEON_HOST=0.0.0.0 \
    ANJEON_PORT=8000 \
    ANJEON_ENVIRONMENT=production

RUN useradd --create-home --uid 10001 anjeon
WORKDIR /app

# The locked dependencies first, so this layer is rebuilt only when the lock changes. The lock
# also pins the build backend (setuptools, wheel) used for the project itself below.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

# The service finds alembic.ini, migrations/ and config/ beside service/, hence the
# editable install from /app; --no-deps: everything it needs is installed above.
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-deps --no-build-isolation -e . && mkdir -p /app/var && chown anjeon /app/var

USER anjeon
# var/ holds the SQLite database and a local secret key file when those are used.
VOLUME ["/app/var"]
EXPOSE 8000
# Ready means the database is reachable and at the schema head. Slim images have no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ANJEON_PORT', '8000'), timeout=3)"]
# Set ANJEON_DATABASE_URL and ANJEON_SECRET_KEY (or ANJEON_SECRET_KEY_FILE) when running.
CMD ["sh", "-c", "anjeon migrate && exec anjeon serve"]
