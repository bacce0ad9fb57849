# Label Studio 1.23.2 in its own image (it pins its own Django), offline-friendly, with the
# platform's bridge app (one organization per workspace, sign-in through the platform, and
# the default-deny organization scope): see label_studio_bridge/cxr_bridge.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LATEST_VERSION_CHECK=false SENTRY_DSN= FRONTEND_SENTRY_DSN= COLLECT_ANALYTICS=false \
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data \
    LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true \
    PYTHONPATH=/label-studio/bridge DJANGO_SETTINGS_MODULE=cxr_bridge.settings
RUN pip install --no-cache-dir label-studio==1.23.2 \
 && useradd --system --home /label-studio ls && mkdir -p /label-studio/data \
 && chown -R ls /label-studio
COPY label_studio_bridge /label-studio/bridge
USER ls
EXPOSE 8080
CMD ["label-studio", "start", "--no-browser", "--internal-host", "0.0.0.0", "--port", "8080", \
     "--enable-legacy-api-token"]
