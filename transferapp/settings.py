"""One settings file, read from the environment (healthchecks style).

Defaults give a zero-setup local install: SQLite, media under ./data, and an
embedded Redis started by `manage.py serve` when REDIS_URL is unset.
"""
import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    value = os.environ.get(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def next_redis_database(url: str) -> str:
    """The same Redis server, the database after the URL's (redis://host:port/N or unix://path?db=N)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(int(query.get("db", "0")) + 1)
        return f"unix://{parts.path}?{urlencode(query)}"
    database = int(parts.path.strip("/") or "0") + 1
    return urlunsplit(parts._replace(path=f"/{database}"))


DEBUG = envbool("DEBUG", "false")
DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / "data"))


def local_secret_key(data_dir: Path) -> str:
    """A per-install key kept in DATA_DIR, for the zero-setup local mode only."""
    import secrets

    key_file = data_dir / "secret_key"
    if not key_file.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


# LOCAL_MODE is set by `dev.py` (the README's commands): one user's machine, no config needed.
LOCAL_MODE = envbool("LOCAL_MODE", "false")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not (DEBUG or LOCAL_MODE):
        raise ImproperlyConfigured(
            "SECRET_KEY must be set in production (DEBUG=false, LOCAL_MODE unset). "
            "On your own machine, run commands as `python3 dev.py manage COMMAND ...` (or set LOCAL_MODE=1)."
        )
    SECRET_KEY = local_secret_key(DATA_DIR)

if not (DEBUG or LOCAL_MODE or os.environ.get("ALLOWED_HOSTS")):
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production (the host names users type).")
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
# A form sent from a stale page gets the app's own page (what happened, the way back), not Django's bare one.
CSRF_FAILURE_VIEW = "transferapp.web.errors.csrf_failure"
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "transferapp.apps.AdminConfig",  # django.contrib.admin, signing in through the app's throttle
    "django_htmx",
    "template_partials",
    "django_rq",
    "ninja",  # the API docs page's Swagger UI files, served locally (no CDN)
    "transferapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "transferapp.web.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before the CSRF check: a body refused unread has no form token, and deserves its own message.
    # Its check runs in process_view, after every middleware's request side: request.user is set by
    # then, and decides how large a body may be read (uploads.may_send_large_bodies).
    "transferapp.web.uploads.RequestRefusalMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "transferapp.web.audit_context.AuditActorMiddleware",  # after auth: it reads request.user
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "transferapp.urls"
WSGI_APPLICATION = "transferapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "transferapp.web.context_processors.site",
            ],
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"), conn_max_age=60, conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The web process and the worker write to one file: wait for the lock instead of failing.
    # WAL lets the web pages read while the worker writes progress.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so that a worker process started by a test sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Unset REDIS_URL means "the embedded Redis": `manage.py serve` starts it on this socket.
EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"
REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{EMBEDDED_REDIS_SOCKET}"
RQ_QUEUES = {
    # Training jobs run long; the database row, not RQ, is the truth about a run.
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": envint("TRAINING_TIMEOUT_S", "21600")},
    # Imports and feature warm-up run on their own worker so that they never wait behind a training.
    "intake": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": envint("IMPORT_TIMEOUT_S", "21600")},
    # Trainings go here instead of "default" while a GPU worker (`manage.py gpuworker`) is alive.
    "gpu": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": envint("TRAINING_TIMEOUT_S", "21600")},
}
# A GPU worker counts as alive this long after its last heartbeat (it beats every GPU_WORKER_TTL_S - 15 s
# when idle); after that, trainings go to the CPU workers again and queued ones are moved there.
GPU_WORKER_TTL_S = envint("GPU_WORKER_TTL_S", "60")
# The worker class settles stale runs and imports on a timer, with no page view needed (workers.py):
# `manage.py rqworker` and `manage.py serve` both use it.
RQ = {"COMMIT_MODE": "on_db_commit", "WORKER_CLASS": "transferapp.jobs.workers.ReapingWorker"}
REAPER_INTERVAL_S = envint("REAPER_INTERVAL_S", "60")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Open sign-up suits a lab's own server; a public one sets ALLOW_SIGNUP=false and creates
# accounts with `manage.py createsuperuser` or the admin.
# Open by default only in local mode (one person's machine); a server opens it explicitly, and
# then SIGNUP_RATE_LIMIT accounts per SIGNUP_RATE_WINDOW_S per client address can be created.
# SIGNUP (issue #26's name) wins over ALLOW_SIGNUP (the older one, still read).
ALLOW_SIGNUP = envbool("SIGNUP", os.environ.get("ALLOW_SIGNUP", "true" if LOCAL_MODE else "false"))
SIGNUP_RATE_LIMIT = envint("SIGNUP_RATE_LIMIT", "5")
SIGNUP_RATE_WINDOW_S = envint("SIGNUP_RATE_WINDOW_S", "3600")
# False removes /admin/ entirely (404), for sites that manage accounts from the command line.
ADMIN_ENABLED = envbool("ADMIN_ENABLED", "true")
# Single sign-on (#26): OpenID Connect, on when the issuer, client id and secret are all set. The
# provider's endpoints and keys come from its discovery document, fetched at the first sign-in and
# kept for an hour (accounts/oidc.py), so the app starts while the provider is down.
OIDC_ISSUER = os.environ.get("OIDC_ISSUER", "").strip().rstrip("/")
OIDC_RP_CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "").strip()
OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_CLIENT_SECRET", "").strip()
OIDC_ENABLED = bool(OIDC_ISSUER and OIDC_RP_CLIENT_ID and OIDC_RP_CLIENT_SECRET)
OIDC_PROVIDER_NAME = os.environ.get("OIDC_PROVIDER_NAME", "").strip() or "single sign-on"
# Off by default: a first sign-in whose e-mail an existing account already uses is refused, not
# linked (linking trusts the provider to have verified the address: an account-takeover risk).
# True links it when the provider says email_verified=true, for a provider that does verify.
OIDC_LINK_VERIFIED_EMAIL = envbool("OIDC_LINK_VERIFIED_EMAIL", "false")
OIDC_RP_SIGN_ALGO = "RS256"  # checked with the provider's JWKS (jwks_uri in its discovery document)
OIDC_RP_SCOPES = "openid email profile"
OIDC_USE_PKCE = True
OIDC_TIMEOUT = envint("OIDC_TIMEOUT_S", "10")
OIDC_DISCOVERY_TTL_S = envint("OIDC_DISCOVERY_TTL_S", "3600")
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
if OIDC_ENABLED:
    AUTHENTICATION_BACKENDS.append("transferapp.accounts.oidc.OIDCBackend")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Media is private: images and models are served only by views that check ownership,
# so there is deliberately no public MEDIA_URL route.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))
MEDIA_URL = "/media-not-served/"
# Trained models and the feature cache live beside the media.
ARTIFACTS_ROOT = Path(os.environ.get("ARTIFACTS_ROOT", MEDIA_ROOT / "artifacts"))

# Object storage (several machines that share nothing but PostgreSQL, Redis and a bucket): with
# S3_BUCKET set, images, thumbnails, trained models, exports, reports and zip imports live in that
# S3-compatible bucket, and each process keeps what its jobs need in a local scratch cache
# (blobs.py), least recently used first out beyond SCRATCH_CACHE_MB. Unset: local files, as before.
S3_BUCKET = os.environ.get("S3_BUCKET", "").strip()
S3_ENDPOINT_URL = os.environ.get("S3_ENDPOINT_URL", "").strip() or None  # None: AWS itself
S3_REGION = os.environ.get("S3_REGION", "").strip() or "us-east-1"
# The address browsers reach the bucket at: when set, downloads redirect there (a presigned URL,
# S3_URL_EXPIRE_S seconds, made after the ownership check); unset, the web process streams them.
S3_PUBLIC_URL = os.environ.get("S3_PUBLIC_URL", "").strip()
S3_URL_EXPIRE_S = envint("S3_URL_EXPIRE_S", "120")
SCRATCH_DIR = Path(os.environ.get("SCRATCH_DIR", DATA_DIR / "scratch"))


def s3_storage(bucket: str, endpoint_url: str | None, access_key: str, secret_key: str, region: str,
               expire_s: int = 120) -> dict:
    """settings.STORAGES["default"] for django-storages' S3 backend on the bucket."""
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": bucket,
        "endpoint_url": endpoint_url,
        "access_key": access_key,
        "secret_key": secret_key,
        "region_name": region,
        "signature_version": "s3v4",
        # Path-style: self-hosted servers (SeaweedFS) answer on one host name, not one per bucket.
        "addressing_style": "path" if endpoint_url else None,
        "default_acl": None,  # private objects: the app hands them out after checking ownership
        "querystring_expire": expire_s,
        # As on disk: a name taken gets a new one rather than overwriting (services rely on it).
        "file_overwrite": False,
        "max_memory_size": 5 * 1024 * 1024,  # a larger file read through the storage spools to disk
    }}


SCRATCH_CACHE_MB = envint("SCRATCH_CACHE_MB", "4096")
if S3_BUCKET:
    import importlib.util

    if importlib.util.find_spec("storages") is None or importlib.util.find_spec("boto3") is None:
        raise ImproperlyConfigured("S3_BUCKET is set, but the object storage packages are not installed: "
                                   "pip install 'transferapp[s3]' (django-storages and boto3).")
    STORAGES["default"] = s3_storage(S3_BUCKET, S3_ENDPOINT_URL, os.environ.get("S3_ACCESS_KEY_ID", ""),
                                     os.environ.get("S3_SECRET_ACCESS_KEY", ""), S3_REGION, S3_URL_EXPIRE_S)
# The feature cache is derived from the images (keyed by content, base and settings): with a
# bucket, each worker keeps its own in its scratch folder and recomputes what it lacks.
FEATURE_CACHE_DIR = Path(os.environ.get("FEATURE_CACHE_DIR") or (SCRATCH_DIR / "feature-cache" if S3_BUCKET
                                                                 else MEDIA_ROOT / "feature-cache"))

MAX_UPLOAD_MB = envint("MAX_UPLOAD_MB", "25")
# A zip import may be large, and it is the largest request body the app accepts.
MAX_IMPORT_MB = envint("MAX_IMPORT_MB", "4096")
FILE_UPLOAD_HANDLERS = [
    "transferapp.web.uploads.SizeCapUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_MB * 1024 * 1024
# Without a session for an active user or a valid API key, a request body may be this large at most
# (the sign-in and sign-up forms are well under it); a larger one is refused unread (uploads.py).
ANONYMOUS_MAX_BODY_KB = envint("ANONYMOUS_MAX_BODY_KB", "1024")
# Where uploads past FILE_UPLOAD_MAX_MEMORY_SIZE are spooled while a request is read (up to
# MAX_IMPORT_MB each). Unset: the system's temp folder (TMPDIR, else /tmp), Django's default, rather
# than a folder under DATA_DIR, which would put it on the database's disk by design. Point it at a
# disk with room for a few imports at once, apart from the database and media if you can.
FILE_UPLOAD_TEMP_DIR = os.environ.get("FILE_UPLOAD_TEMP_DIR") or None
if FILE_UPLOAD_TEMP_DIR:
    Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)  # Django would fail each large upload without it
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = envint("MAX_UPLOAD_FILES", "500")
MAX_IMAGE_PIXELS = envint("MAX_IMAGE_PIXELS", "40000000")
# Decoded size cap (pixels x channels x bytes a sample, in 10^6 bytes), checked from the header
# like MAX_IMAGE_PIXELS: 120 lets a 40-megapixel 8-bit RGB photo through; 16/32-bit and float
# images get half of it (about 30 megapixels of 16-bit grey), as windowing them needs working copies.
MAX_DECODED_MB = envint("MAX_DECODED_MB", "120")
# Images decoded at once in one process (uploads, predictions, the API); others wait their turn.
MAX_CONCURRENT_DECODES = envint("MAX_CONCURRENT_DECODES", "2")
# Trained models each web process keeps loaded for predictions (least recently used goes first).
PREDICT_CACHE_MODELS = envint("PREDICT_CACHE_MODELS", "8")
# Memory the web process gives recent images' heat-map evidence and overlays (heatmaps.py):
# ~0.45 MB an image with a few overlays, so 64 MB keeps about the last 150 predicted images.
HEATMAP_CACHE_MB = envint("HEATMAP_CACHE_MB", "64")

# Per-user quotas (0 = no limit); the admin overrides them per user (UserQuota, on the user's page).
QUOTA_STORAGE_MB = envint("QUOTA_STORAGE_MB", "10000")  # bytes of stored images, in 10^6 bytes
QUOTA_IMAGES = envint("QUOTA_IMAGES", "50000")
QUOTA_PROJECTS = envint("QUOTA_PROJECTS", "100")
QUOTA_RUNS = envint("QUOTA_RUNS", "2")  # trainings queued or running at once
QUOTA_IMPORTS = envint("QUOTA_IMPORTS", "2")  # zip imports queued or running at once

# A worker that has not touched its run for this long is presumed dead.
RUN_HEARTBEAT_TIMEOUT_S = envint("RUN_HEARTBEAT_TIMEOUT_S", "180")
# A training, import or batch prediction whose worker died is run again (every job is safe to repeat)
# until it has been tried this often; then it is failed with the reason. 1 = never run again.
JOB_ATTEMPTS = envint("JOB_ATTEMPTS", "2")
# Deleted images can be restored ("Undo") for this long; then their rows and files are purged.
DELETED_IMAGES_KEPT_MINUTES = envint("DELETED_IMAGES_KEPT_MINUTES", "30")
TORCH_THREADS = envint("TORCH_THREADS", "0")  # 0 = let torch decide
# Torch threads in each web process (predictions), set once by wsgi.py; 0 = let torch decide.
WEB_TORCH_THREADS = envint("WEB_TORCH_THREADS", "1")

# HTTPS=true when users reach the app over TLS (directly or through a proxy that sets
# X-Forwarded-Proto): secure cookies, redirect to https, HSTS.
HTTPS = envbool("HTTPS", "false")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = envint("HSTS_SECONDS", "31536000") if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# The cache is shared by all web processes (login rate limits must not reset per process).
# Its own Redis database: clearing the cache must never empty the job queues.
CACHE_REDIS_URL = os.environ.get("CACHE_REDIS_URL") or next_redis_database(REDIS_URL)
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_REDIS_URL, "KEY_PREFIX": "transferapp"}}
LOGIN_ATTEMPTS_LIMIT = envint("LOGIN_ATTEMPTS_LIMIT", "10")
LOGIN_ATTEMPTS_WINDOW_S = envint("LOGIN_ATTEMPTS_WINDOW_S", "900")
# Failed sign-ins from one address across all accounts (see auth.py for why both limits).
LOGIN_ADDRESS_ATTEMPTS_LIMIT = envint("LOGIN_ADDRESS_ATTEMPTS_LIMIT", "50")
# Behind a reverse proxy every request comes from the proxy's address: name the header it sets
# (e.g. X-Forwarded-For) and how many proxies append to it, so rate limits see real clients.
# Unset, the header is ignored: a client could write anything into it.
TRUSTED_PROXY_HEADER = os.environ.get("TRUSTED_PROXY_HEADER", "").strip()
TRUSTED_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", "1")
if TRUSTED_PROXY_COUNT < 1:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 1 or more.")
# Images predicted per user per minute in the web process (0 = no limit).
PREDICT_RATE_PER_MIN = envint("PREDICT_RATE_PER_MIN", "120")
# An image counts once per started PREDICT_UNIT_MEGAPIXELS against PREDICT_RATE_PER_MIN and
# API_RATE_PER_MIN: a 12-megapixel photo counts 1, a 40-megapixel one 4 (decoding costs by size).
PREDICT_UNIT_MEGAPIXELS = envint("PREDICT_UNIT_MEGAPIXELS", "12")
# Batch predictions on the predict page: up to this many loose images are answered at once in the
# request (about 3 s on 2 cores); more, or any zip (its size is unknown until opened), go to the
# worker with a progress bar. Their CSV and thumbnails are kept BATCH_KEPT_DAYS, then deleted.
BATCH_INLINE_MAX_IMAGES = envint("BATCH_INLINE_MAX_IMAGES", "50")
BATCH_KEPT_DAYS = envint("BATCH_KEPT_DAYS", "7")

# Monitoring (#25). Every prediction is logged; a project that keeps images (the default) keeps a
# small JPEG of each (longest side PREDICTION_IMAGE_MAX_SIDE px) for PREDICTION_IMAGES_KEPT_DAYS so
# the owner can review it; the log rows stay PREDICTION_LOG_KEPT_DAYS. A project's kept images
# stop growing past PREDICTION_IMAGES_MAX_MB (older ones go first).
# PREDICTION_LOG=false logs nothing (the API latency bench compares both; an operator may opt out).
PREDICTION_LOG = envbool("PREDICTION_LOG", "true")
PREDICTION_IMAGES_KEPT_DAYS = envint("PREDICTION_IMAGES_KEPT_DAYS", "30")
PREDICTION_LOG_KEPT_DAYS = envint("PREDICTION_LOG_KEPT_DAYS", "365")
PREDICTION_IMAGE_MAX_SIDE = envint("PREDICTION_IMAGE_MAX_SIDE", "512")
PREDICTION_IMAGES_MAX_MB = envint("PREDICTION_IMAGES_MAX_MB", "500")
# The review queue's size (unreviewed audit plus "don't know" predictions) that sends review.needed.
REVIEW_NEEDED_AT = envint("REVIEW_NEEDED_AT", "50")
# The Inbox's quick model retrains (and the "label these next" order is recomputed) every this many labels (#24).
INBOX_RETRAIN_EVERY = envint("INBOX_RETRAIN_EVERY", "5")
# Webhook URLs that resolve to private, loopback or link-local addresses are refused unless the
# operator allows them (an intranet receiver): otherwise a user could make the server probe its own network.
WEBHOOK_ALLOW_PRIVATE = envbool("WEBHOOK_ALLOW_PRIVATE", "false")
WEBHOOK_TIMEOUT_SECONDS = envint("WEBHOOK_TIMEOUT_SECONDS", "10")
WEBHOOK_MAX_ATTEMPTS = envint("WEBHOOK_MAX_ATTEMPTS", "5")
# REST API: requests (images, for predictions and uploads) per key and minute; 0 = no limit.
API_RATE_PER_MIN = envint("API_RATE_PER_MIN", "600")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
