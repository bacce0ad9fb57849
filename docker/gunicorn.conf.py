"""gunicorn settings for the platform container."""

import os

bind = "0.0.0.0:8000"
workers = int(os.environ.get("CXR_WEB_WORKERS", "3"))
timeout = 120
accesslog = "-"
# Query strings carry image signatures: log the path only.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
