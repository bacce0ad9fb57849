"""Settings, all from ``CXR_*`` environment variables with embedded defaults.

Embedded defaults (nothing set): SQLite under ``var/``, Celery tasks run
eagerly, media under ``var/media``, development mode.  Set ``DATABASE_URL``
(or ``CXR_DATABASE_URL``) and ``CELERY_BROKER_URL`` (or ``CXR_BROKER_URL``) and
the same code runs on PostgreSQL with real workers.  ``CXR_MODE=production``
refuses to start without a real ``CXR_SECRET_KEY`` and ``CXR_PSEUDONYM_KEY``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from cxr_platform import env

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env.get("DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

MODE = env.get("MODE", "development")
PRODUCTION = MODE == "production"
DEBUG = env.get_bool("DEBUG", default=not PRODUCTION)

_INSECURE_PREFIX = "insecure-dev-"


def _dev_secret(name: str) -> str:
    """A per-installation random secret kept in DATA_DIR (development only).

    Persisting it matters for the pseudonym key: re-importing a study must map
    to the same pseudonymous id across restarts.
    """
    path = DATA_DIR / f".{name}"
    if not path.exists():
        path.write_text(_INSECURE_PREFIX + secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _secret(name: str) -> str:
    value = env.get(name.upper())
    if PRODUCTION and (not value or value.startswith(_INSECURE_PREFIX) or len(value) < 32):
        raise ImproperlyConfigured(
            f"CXR_{name.upper()} must be set to a random value of at least 32 characters "
            "in production (CXR_MODE=production)."
        )
    return value or _dev_secret(name)


SECRET_KEY = _secret("secret_key")
#: Key of the HMAC that turns patient/study/instance identifiers into pseudonyms.
PSEUDONYM_KEY = _secret("pseudonym_key")

ALLOWED_HOSTS = env.get_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.get_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "annotations",
    "webapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cxr_platform.urls"
WSGI_APPLICATION = "cxr_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env.get(
            "DATABASE_URL",
            f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
            aliases=("DATABASE_URL",),
        ),
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Ingest workers write concurrently: take the write lock when a transaction
    # starts (no lock-upgrade deadlocks), wait for it, and let readers run
    # beside the writer (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # No JIT compilation: the platform's queries are short, and when the planner
    # overestimates a join (the image-state query at 100,000 images) PostgreSQL spends
    # more compiling than running it (770 ms of 1.9 s, measured with bench/scale).
    # Appended to options given in DATABASE_URL; CXR_DATABASE_JIT=server leaves JIT to
    # the server (a pooler such as PgBouncer may refuse the startup option).
    if env.get("DATABASE_JIT", "off") == "off":
        options = DATABASES["default"].setdefault("OPTIONS", {})
        options["options"] = f"{options.get('options', '')} -c jit=off".strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Input limits and accounts ------------------------------------------------
# Every input is bounded before it is expanded (docs/configuration.md).
_MIB = 1024 * 1024
#: Uploads are counted while they stream in and refused with 413 past a limit:
#: one file, and all files of one request (the request body) together.
#: Quick read uses its own ``CXR_QUICK_READ_MAX_BYTES`` for both.
UPLOAD_MAX_FILE_BYTES = env.get_int("UPLOAD_MAX_FILE_BYTES", 256 * _MIB)
UPLOAD_MAX_REQUEST_BYTES = env.get_int("UPLOAD_MAX_REQUEST_BYTES", 1024 * _MIB)
#: Annotation imports are parsed in memory: the upload and, for a zip, the
#: total of its expanded members.
IMPORT_MAX_BYTES = env.get_int("IMPORT_MAX_BYTES", 64 * _MIB)
#: Every zip the platform opens (ingest from a path or upload, annotation
#: imports) is checked from its directory before anything is expanded.
ZIP_MAX_MEMBERS = env.get_int("ZIP_MAX_MEMBERS", 10_000)
ZIP_MAX_TOTAL_BYTES = env.get_int("ZIP_MAX_TOTAL_BYTES", 4096 * _MIB)
ZIP_MAX_MEMBER_BYTES = env.get_int("ZIP_MAX_MEMBER_BYTES", 256 * _MIB)
ZIP_MAX_RATIO = float(env.get("ZIP_MAX_RATIO", "100"))
FILE_UPLOAD_HANDLERS = [
    "annotations.api.uploads.LimitedUploadHandler",  # counts first, refuses early
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
#: Sign-in (web page and API token): failed attempts allowed per username and
#: client address, and per client address over all usernames, within the
#: window; past either the attempt is refused (429) until the window ends.
LOGIN_MAX_FAILURES = env.get_int("LOGIN_MAX_FAILURES", 5)
LOGIN_MAX_FAILURES_PER_IP = env.get_int("LOGIN_MAX_FAILURES_PER_IP", 50)
LOGIN_WINDOW_SECONDS = env.get_int("LOGIN_WINDOW_SECONDS", 900)
#: Behind a proxy that overwrites it, the META key carrying the client address
#: (e.g. ``HTTP_X_REAL_IP``); empty: ``REMOTE_ADDR``.
CLIENT_IP_HEADER = env.get("CLIENT_IP_HEADER", "")
#: API tokens expire this long after they are issued (a new one is issued by
#: signing in again at /api/auth/token/).
TOKEN_TTL_HOURS = env.get_int("TOKEN_TTL_HOURS", 24)
#: One password policy for every account path (API, web app, admin, commands).
PASSWORD_MIN_LENGTH = env.get_int("PASSWORD_MIN_LENGTH", 10)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": PASSWORD_MIN_LENGTH}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
#: Throttling counters live in the cache: set ``CXR_CACHE_URL`` (Redis) when
#: more than one process serves requests, so they share the counts.
CACHE_URL = env.get("CACHE_URL")
CACHES = {"default": (
    {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL,
     "KEY_PREFIX": "cxr"} if CACHE_URL else
    {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "cxr"})}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
MEDIA_ROOT = Path(env.get("MEDIA_ROOT", str(DATA_DIR / "media"))).resolve()
#: Files that failed ingest, kept aside for an admin (never served).
QUARANTINE_ROOT = DATA_DIR / "quarantine"
#: Quarantined originals (raw, with identity) are deleted this many days after
#: they arrived; their rows and reasons stay (annotations.services.quarantine).
QUARANTINE_RETENTION_DAYS = env.get_int("QUARANTINE_RETENTION_DAYS", 30)
#: Uploaded / copied files waiting for their ingest task.
STAGING_ROOT = DATA_DIR / "staging"

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

#: Browser assets installed from the npm registry by scripts/install_web_assets
#: (webapp/node_modules links to the cached install); served by the platform
#: itself under /static/vendor/, so the web app needs no internet.
WEB_ASSETS_DIR = BASE_DIR / "webapp" / "node_modules"
STATICFILES_DIRS = [("vendor/chart.js", WEB_ASSETS_DIR / "chart.js" / "dist")]
#: Quick read: the largest DICOM a user may upload for a one-off look (bytes).
QUICK_READ_MAX_BYTES = env.get_int("QUICK_READ_MAX_BYTES", 64 * 1024 * 1024)
#: Quick read keeps boxes down to this score, so its slider can go that low.
QUICK_READ_MIN_SCORE = float(env.get("QUICK_READ_MIN_SCORE", "0.05"))

# --- REST API --------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: unauthenticated API calls then get 401 with WWW-Authenticate.
        "annotations.api.authentication.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "annotations.api.exceptions.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "annotations.api.pagination.LimitOffsetCapped",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CXR annotation platform API",
    "DESCRIPTION": "Multi-reader chest X-ray annotation, consensus and model training.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI assets come from the installed sidecar package: works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Service identities (the ML backend) -----------------------------------
#: ``Authorization: Service <key>`` (``manage.py ml_backend_token``): accepted only on
#: the endpoints that name the service, 403 everywhere else (annotations.api.service_auth).
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"].append(
    "annotations.api.service_auth.ServiceTokenAuthentication")
#: A service token's lifetime; rotate before it ends (rotation revokes the old one).
SERVICE_TOKEN_TTL_DAYS = env.get_int("SERVICE_TOKEN_TTL_DAYS", 365)

# --- Celery ----------------------------------------------------------------
CELERY_BROKER_URL = env.get("BROKER_URL", aliases=("CELERY_BROKER_URL",))
CELERY_TASK_ALWAYS_EAGER = CELERY_BROKER_URL is None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "annotations.tasks.ingest_*": {"queue": "ingest"},
    "annotations.tasks.gpu_*": {"queue": "gpu"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
#: A periodic reconcile looks only at tasks changed since its last pass; every this many
#: hours it looks at every task of a workspace again (a full pass).
RECONCILE_FULL_HOURS = env.get_int("RECONCILE_FULL_HOURS", 24)
#: Webhooks can be missed (Label Studio waits 1 s): reconcile periodically.
CELERY_BEAT_SCHEDULE = {
    "label-studio-reconcile": {
        "task": "annotations.tasks.label_studio_reconcile_task",
        "schedule": env.get_int("RECONCILE_EVERY", 600),
    },
    "quarantine-purge": {
        "task": "annotations.tasks.quarantine_purge_task",
        "schedule": 24 * 3600,
    },
}

# --- Background runs (annotations.services.runs, docs/runs.md) ---------------
#: Seconds a running run may go without a heartbeat before the sweep counts its
#: worker as lost, per kind.  Consensus heartbeats at its start and between
#: computing and storing; pre-labelling after each batch; training every
#: CXR_RUN_HEARTBEAT_SECONDS; an ingest batch with each file.
RUN_TIMEOUTS = {
    "consensus": env.get_int("RUN_TIMEOUT_CONSENSUS", 600),
    "prelabel": env.get_int("RUN_TIMEOUT_PRELABEL", 600),
    "training": env.get_int("RUN_TIMEOUT_TRAINING", 900),
    "ingest": env.get_int("RUN_TIMEOUT_INGEST", 1800),
    # an active-learning round heartbeats with every scored batch
    "al_round": env.get_int("RUN_TIMEOUT_AL_ROUND", 600),
    # a reconcile pass heartbeats after each workspace
    "reconcile": env.get_int("RUN_TIMEOUT_RECONCILE", 600),
}
#: A pending run (or a batch's pending files) not started this long after it was
#: queued is queued again: its message may have been lost (broker restart).
RUN_PENDING_TIMEOUT = env.get_int("RUN_PENDING_TIMEOUT", 3600)
#: Claims of one run (first run, retries, re-queues) before a lost one is FAILED.
RUN_MAX_ATTEMPTS = env.get_int("RUN_MAX_ATTEMPTS", 3)
#: How often a training heartbeats (and notices a cancel), seconds.
RUN_HEARTBEAT_SECONDS = env.get_int("RUN_HEARTBEAT_SECONDS", 10)
CELERY_BEAT_SCHEDULE["runs-sweep"] = {
    "task": "annotations.tasks.runs_sweep_task",
    "schedule": env.get_int("RUN_SWEEP_EVERY", 60),
}

# --- Imaging ---------------------------------------------------------------
DISPLAY_LONG_SIDE = env.get_int("DISPLAY_LONG_SIDE", 1024)
THUMBNAIL_LONG_SIDE = env.get_int("THUMBNAIL_LONG_SIDE", 256)
#: Images smaller or larger than this (pixels per side) are quarantined.
MIN_IMAGE_SIDE = env.get_int("MIN_IMAGE_SIDE", 128)
MAX_IMAGE_SIDE = env.get_int("MAX_IMAGE_SIDE", 8192)
#: Modalities accepted as radiographs.
RADIOGRAPH_MODALITIES = env.get_list("RADIOGRAPH_MODALITIES", ["CR", "DX", "DR", "RG", "PX"])

# --- Models -----------------------------------------------------------------
#: Model versions (one folder each).  Which one serves a project is the registry's
#: (``ModelVersion.promoted``), never a file.  The ML backend reads the same folder
#: (its CXR_ML_MODEL_DIR; in compose the same volume at the same path, read-only).
MODEL_DIR = Path(env.get("MODEL_DIR", str(DATA_DIR / "models"))).resolve()
#: Rendezvous of a training on several machines (``"machines"`` > 1): rank 0 (the gpu
#: worker) listens here, every other machine's ``manage.py train_join`` connects here.
TRAIN_DIST_URL = env.get("TRAIN_DIST_URL", "")
#: Key of the proof every training process gives its peers at the rendezvous (each run
#: gets its own key, an HMAC of the run under this one).  Every machine of a training
#: needs the same value; like every secret here, production refuses to start without it.
TRAIN_JOIN_SECRET = _secret("train_join_secret")
PRELABEL_BATCH_SIZE = env.get_int("PRELABEL_BATCH_SIZE", 8)
#: Pre-labelling forwards in float16 autocast on a GPU (ignored on the CPU).
PRELABEL_AMP = env.get_bool("PRELABEL_AMP", default=True)
#: Detector training in float16 autocast on a GPU (ignored on the CPU).
TRAIN_AMP = env.get_bool("TRAIN_AMP", default=True)
#: Detections kept by the pre-labelling pass (low: uncertainty needs the doubtful ones).
PRELABEL_SCORE_THRESH = float(env.get("PRELABEL_SCORE_THRESH", "0.05"))
#: Only pre-label boxes at least this confident are shown to readers.
PRELABEL_MIN_SCORE_SHOWN = float(env.get("PRELABEL_MIN_SCORE_SHOWN", "0.3"))
#: Initial weights for training (a path or URL to a COCO/ImageNet-pretrained
#: checkpoint).  Empty: random init (fine for tests; production should not).
INITIAL_WEIGHTS = env.get("INITIAL_WEIGHTS", "")
#: The ML backend Label Studio talks to, and the basic-auth pair it requires.
ML_BACKEND_URL = env.get("ML_BACKEND_URL", "http://127.0.0.1:9090").rstrip("/")
ML_BACKEND_USER = env.get("ML_BACKEND_USER", "label-studio")
ML_BACKEND_PASSWORD = env.get("ML_BACKEND_PASSWORD") or (
    None if PRODUCTION else _dev_secret("ml_backend_password")[-32:])

# --- Signed image URLs ------------------------------------------------------
SIGNED_URL_TTL_SECONDS = env.get_int("SIGNED_URL_TTL", 3600)

# --- Object storage -----------------------------------------------------------
#: Where images, derivatives, masks, staged uploads, quarantined originals and model
#: versions live: ``local`` (folders under CXR_DATA_DIR, the embedded default) or ``s3``
#: (any S3 API: MinIO, Ceph, AWS) through django-storages.  Every worker reaches files
#: through these stores only (annotations.services.storage), so a worker on another host
#: needs the database, the broker and the store, never this machine's disk.
STORAGE_BACKEND = env.get("STORAGE", "local")
if STORAGE_BACKEND not in ("local", "s3"):
    raise ImproperlyConfigured("CXR_STORAGE must be 'local' or 's3'")
#: Store name -> (local folder setting, S3 key prefix).  Quarantine and staging hold raw
#: originals (identity included): private files locally (quarantine), and on S3 the
#: private bucket when one is named (CXR_S3_QUARANTINE_BUCKET).
STORE_ROOTS = {"default": ("MEDIA_ROOT", "media"), "staging": ("STAGING_ROOT", "staging"),
               "quarantine": ("QUARANTINE_ROOT", "quarantine"),
               "models": ("MODEL_DIR", "models")}
#: The bounded local copy a worker keeps of what it fetched from a remote store
#: (least recently used files go first once it holds more than CXR_CACHE_MAX_BYTES).
STORAGE_CACHE_ROOT = Path(env.get("STORAGE_CACHE_DIR", str(DATA_DIR / "cache"))).resolve()
STORAGE_CACHE_MAX_BYTES = env.get_int("STORAGE_CACHE_MAX_BYTES", 4 * 1024**3)
#: ``signed``: image URLs are the platform's own HMAC route (the default, any store);
#: ``presigned``: Label Studio and browsers fetch from the store's presigned URLs (S3
#: only; the store must be reachable from them).  Both expire after SIGNED_URL_TTL.
IMAGE_URLS = env.get("IMAGE_URLS", "signed")
if IMAGE_URLS not in ("signed", "presigned") or (IMAGE_URLS == "presigned"
                                                 and STORAGE_BACKEND != "s3"):
    raise ImproperlyConfigured("CXR_IMAGE_URLS must be 'signed', or 'presigned' with "
                               "CXR_STORAGE=s3")


def _s3_options(prefix: str, *, private: bool = False) -> dict:
    bucket = env.get("S3_BUCKET")
    if private:
        bucket = env.get("S3_QUARANTINE_BUCKET", bucket)
    if not bucket:
        raise ImproperlyConfigured("CXR_STORAGE=s3 needs CXR_S3_BUCKET")
    return {
        "bucket_name": bucket, "location": prefix,
        "endpoint_url": env.get("S3_ENDPOINT_URL"),
        "region_name": env.get("S3_REGION", "us-east-1"),
        "access_key": env.get("S3_ACCESS_KEY_ID"),
        "secret_key": env.get("S3_SECRET_ACCESS_KEY"),
        # MinIO and Ceph answer on one host name: path-style addressing
        "addressing_style": env.get("S3_ADDRESSING_STYLE", "path"),
        "signature_version": "s3v4", "default_acl": None, "file_overwrite": True,
        "querystring_auth": True, "querystring_expire": SIGNED_URL_TTL_SECONDS,
        "object_parameters": {"ServerSideEncryption": "AES256"}
        if env.get_bool("S3_ENCRYPT", default=False) else {},
    }


def storage_config(backend: str) -> dict:
    """``STORAGES`` for ``local`` or ``s3`` (the S3 options read from the environment
    when called: the tests build an S3 configuration this way too)."""
    if backend == "s3":
        stores = {name: {"BACKEND": "storages.backends.s3.S3Storage",
                         "OPTIONS": _s3_options(prefix,
                                                private=name in ("quarantine", "staging"))}
                  for name, (_setting, prefix) in STORE_ROOTS.items()}
    else:
        stores = {name: {"BACKEND": "annotations.storage_backends.LocalStorage",
                         "OPTIONS": {"root_setting": setting,
                                     "private": name == "quarantine"}}
                  for name, (setting, _prefix) in STORE_ROOTS.items()}
    stores["staticfiles"] = {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    return stores


STORAGES = storage_config(STORAGE_BACKEND)
#: Origins (e.g. the Label Studio server) allowed to fetch image files cross-origin.
IMAGE_CORS_ORIGINS = env.get_list(
    "IMAGE_CORS_ORIGINS",
    [(env.get("LABEL_STUDIO_URL") or env.get("LABEL_STUDIO_INTERNAL_URL")
      or "http://127.0.0.1:8080").rstrip("/")])
PUBLIC_BASE_URL = env.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000")

# --- Label Studio ----------------------------------------------------------
#: An external server when set; otherwise the one ``run_platform`` starts itself.
LABEL_STUDIO_URL = (env.get("LABEL_STUDIO_URL") or env.get("LABEL_STUDIO_INTERNAL_URL")
                    or "http://127.0.0.1:8080").rstrip("/")
#: Where readers' browsers reach Label Studio (sign-in links); the internal URL by default.
LABEL_STUDIO_PUBLIC_URL = (env.get("LABEL_STUDIO_PUBLIC_URL") or LABEL_STUDIO_URL).rstrip("/")
#: Admin user's legacy API token (6..40 characters).
LABEL_STUDIO_TOKEN = env.get("LABEL_STUDIO_TOKEN") or (
    None if PRODUCTION else _dev_secret("label_studio_token")[-40:])
#: Master key of the per-workspace webhook secrets (each workspace's secret is an HMAC of
#: its id under this key, so no two workspaces, and no two readers, share one).
LABEL_STUDIO_WEBHOOK_SECRET = _secret("label_studio_webhook_secret")
LABEL_STUDIO_WEBHOOK_HEADER = "X-CXR-Webhook-Secret"
#: The credential of the bridge inside Label Studio (organizations per workspace, sign-in
#: tickets); Label Studio is started with the same value as CXR_BRIDGE_SECRET.
LABEL_STUDIO_BRIDGE_SECRET = _secret("label_studio_bridge_secret")
#: Seconds a Label Studio sign-in ticket is valid (it is used once, at once).
LABEL_STUDIO_TICKET_TTL = env.get_int("LABEL_STUDIO_TICKET_TTL", 60)
#: URL Label Studio uses to reach the platform (webhooks, image files).
PLATFORM_URL_FOR_LABEL_STUDIO = env.get("PLATFORM_URL_FOR_LABEL_STUDIO", PUBLIC_BASE_URL)
#: Image URLs stored in Label Studio tasks stay valid this long (seconds).
LABEL_STUDIO_IMAGE_URL_TTL = env.get_int("LABEL_STUDIO_IMAGE_URL_TTL", 30 * 24 * 3600)
LABEL_STUDIO_TIMEOUT = float(env.get("LABEL_STUDIO_TIMEOUT", "10"))

# --- Security hardening in production ---------------------------------------
if PRODUCTION:
    SESSION_COOKIE_SECURE = env.get_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env.get_bool("SECURE_COOKIES", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    #: Plain-HTTP requests are redirected to HTTPS, except the service-to-service
    #: routes that Label Studio and the ML backend call on the internal network
    #: (signed image files, the webhook, the ML endpoints) and the health check.
    SECURE_SSL_REDIRECT = env.get_bool("SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = env.get_list("SSL_REDIRECT_EXEMPT", [
        r"^health/$", r"^files/images/", r"^api/label-studio/webhook/\d+/$", r"^api/ml/"])
    #: The TLS-terminating proxy says so in this header (it must set or strip it).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    #: Browsers keep to HTTPS this long once they have seen the site over it.
    SECURE_HSTS_SECONDS = env.get_int("HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.get_bool("HSTS_INCLUDE_SUBDOMAINS", False)

# --- Logging: identifiers only, never patient identity ----------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
