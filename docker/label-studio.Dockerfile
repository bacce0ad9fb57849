# Label Studio 1.23.2 in its own image (it pins its own Django), offline-friendly.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LATEST_VERSION_CHECK=false SENTRY_DSN= FRONTEND_SENTRY_DSN= COLLECT_ANALYTICS=false \
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data
RUN pip install --no-cache-dir label-studio==1.23.2 \
 && useradd --system --home /label-studio ls && mkdir -p /label-studio/data \
 && chown -R ls /label-studio
USER ls
EXPOSE 8080
CMD ["label-studio", "start", "--no-browser", "--internal-host", "0.0.0.0", "--port", "8080", \
     "--enable-legacy-api-token"]
