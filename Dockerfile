# Image for web (Daphne), worker and beat; see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends sox espeak-ng libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --system --uid 1000 --home /app callcenter \
    && mkdir -p /data && chown callcenter /data
USER callcenter

EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "callcenter.asgi:application"]
