# Anjeon service image: slim Python 3.11, non-root, migrates then serves.
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

# The service finds alembic.ini, migrations/ and config/ beside service/, hence the
# editable install from /app.
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY migrations ./migrations
COPY config ./config
RUN pip install -e . && mkdir -p /app/var && chown anjeon /app/var

USER anjeon
EXPOSE 8000
# Set ANJEON_DATABASE_URL and ANJEON_SECRET_KEY (or ANJEON_SECRET_KEY_FILE) when running.
CMD ["sh", "-c", "anjeon migrate && exec anjeon serve"]
