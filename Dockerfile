# One image for the web server (default command) and the training workers
# (`docker run IMAGE python manage.py rqworker default`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/data MEDIA_ROOT=/data/media STATIC_ROOT=/app/staticfiles \
    TORCH_HOME=/app/torch-home
WORKDIR /app

# WeasyPrint (training reports as PDF) draws text with Pango; DejaVu gives it a font to draw with.
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

# A CPU-only PyTorch keeps the image small; pass your PyTorch wheel index as TORCH_INDEX_URL.
ARG TORCH_INDEX_URL=""
COPY pyproject.toml README.md ./
COPY transferapp ./transferapp
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.14.1 torchvision==0.29.1 --index-url "$TORCH_INDEX_URL"; fi \
 && pip install '.[s3]'

COPY manage.py ./
COPY templates ./templates
COPY static ./static

# Offline sites: pre-fetch torchvision bases into the image at build time, e.g.
#   docker build --build-arg PREFETCH_WEIGHTS="resnet50 convnext_tiny" .
# (EfficientNet-Lite0 is bundled in the Python package and needs nothing.)
ARG PREFETCH_WEIGHTS=""
RUN SECRET_KEY=build python manage.py collectstatic --noinput \
 && if [ -n "$PREFETCH_WEIGHTS" ]; then SECRET_KEY=build python manage.py fetch_weights $PREFETCH_WEIGHTS; fi \
 && useradd --create-home --uid 1000 app \
 && mkdir -p /data /app/torch-home && chown -R app /data /app/torch-home

USER app
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn transferapp.wsgi --bind 0.0.0.0:8000 --worker-class gthread --threads 8 --workers 2 --timeout 120 --limit-request-line 8190 --access-logfile -"]
