# The Detectron2 ML backend (Label Studio's ML-backend protocol), CPU or GPU.
# Build args pick the torch wheel index for GPU hosts; Detectron2 is built from
# the pinned sdist by scripts/install_detectron2.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY scripts/install_detectron2 scripts/install_detectron2
# the interpreter's own prefix is the "virtualenv" here (bin/python, bin/pip)
RUN scripts/install_detectron2 /usr/local
COPY . .
# the platform's model folder (CXR_MODEL_DIR), mounted read-only at the same path
RUN useradd --system --home /app ml && mkdir -p /data/models
USER ml
ENV CXR_ML_MODEL_DIR=/data/models
EXPOSE 9090
CMD ["gunicorn", "ml_backend.app:application", "--bind", "0.0.0.0:9090", "--workers", "2", \
     "--timeout", "300"]
