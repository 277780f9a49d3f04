"""TaskHub settings: one module, driven by the environment (and `.env` when present).

Every environment-specific value comes from an environment variable with a safe development
default; secrets have no production default. docs/CONFIGURATION.md describes every variable.
"""

from __future__ import annotations

from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.secrets import load_secret
from core import shortcuts

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if env.bool("TASKHUB_READ_DOTENV", default=True):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("TASKHUB_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = load_secret(
    "DJANGO_SECRET_KEY", value=env.str("DJANGO_SECRET_KEY", default=""), debug=DEBUG, var_dir=VAR_DIR
)
JWT_SECRET_KEY = load_secret(
    "JWT_SECRET_KEY", value=env.str("JWT_SECRET_KEY", default=""), debug=DEBUG, var_dir=VAR_DIR
)

# --- Public address -------------------------------------------------------------------------
EXTERNAL_HOST = env.str("EXTERNAL_HOST", default="")
EXTERNAL_PORT = env.int("EXTERNAL_PORT", default=0) or None
EXTERNAL_PROTOCOL = env.str("EXTERNAL_PROTOCOL", default="http").lower()
if EXTERNAL_PROTOCOL not in ("http", "https"):
    raise ImproperlyConfigured(f"EXTERNAL_PROTOCOL must be 'http' or 'https', not {EXTERNAL_PROTOCOL!r}.")
FRONTEND_DOMAIN = env.str("FRONTEND_DOMAIN", default="")


def _origin(value: str, default_scheme: str) -> str:
    """Return `scheme://host[:port]` for a bare host or a full origin."""
    value = value.strip().rstrip("/")
    return value if "://" in value else f"{default_scheme}://{value}"


def _external_origin() -> str | None:
    if not EXTERNAL_HOST:
        return None
    default_port = {"http": 80, "https": 443}[EXTERNAL_PROTOCOL]
    port = f":{EXTERNAL_PORT}" if EXTERNAL_PORT and EXTERNAL_PORT != default_port else ""
    return f"{EXTERNAL_PROTOCOL}://{EXTERNAL_HOST}{port}"


EXTERNAL_ORIGIN = _external_origin()
FRONTEND_ORIGINS = [_origin(v, EXTERNAL_PROTOCOL) for v in FRONTEND_DOMAIN.split(",") if v.strip()]

# Loopback stays allowed so health probes and the local curl check work on every instance.
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"] + ([EXTERNAL_HOST] if EXTERNAL_HOST else [])
ALLOWED_HOSTS += env.list("EXTRA_ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = ([EXTERNAL_ORIGIN] if EXTERNAL_ORIGIN else []) + FRONTEND_ORIGINS

CORS_ALLOWED_ORIGINS = FRONTEND_ORIGINS
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "user-agent",
    "x-csrftoken",
    "x-requested-with",
    "x-request-id",
    "accept-language",
)
CORS_EXPOSE_HEADERS = ["X-Request-ID", "Retry-After", "WWW-Authenticate"]

if EXTERNAL_PROTOCOL == "https":
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Load balancers probe over plain HTTP; a redirect would read as "down".
    SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Applications ---------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "corsheaders",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "health_check",
    "core",
    "accounts",
    "tasks",
    "diagnostics",
]
# Django 5.2 has no django.tasks: the django-tasks backport provides it (its checks and signals
# load with its app). Django 6.x has it built in, and the backport is not needed.
if find_spec("django.tasks") is None:
    INSTALLED_APPS.insert(INSTALLED_APPS.index("tasks"), "django_tasks")

MIDDLEWARE = [
    # Outermost: gives every request an id and guarantees a clean DB session at its end.
    "core.db.middleware.DatabaseSessionMiddleware",
    # Records this instance's JWT key fingerprint (throttled) for check_production to compare.
    "diagnostics.instances.InstanceFingerprintMiddleware",
    # Outside the middleware that refuse a Host or a body: every /api/ answer is JSON, no slash redirect.
    "core.api_paths.ApiPathMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Stamps a user who wrote, so their reads stay on the primary for a while (a no-op without a replica).
    "core.db.replica.ReadYourWritesMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_TYPE = env.str("DATABASE_TYPE", default="sqlite").lower()

MYSQL_WAIT_TIMEOUT = env.int("MYSQL_WAIT_TIMEOUT", default=28800)
MYSQL_INTERACTIVE_TIMEOUT = env.int("MYSQL_INTERACTIVE_TIMEOUT", default=28800)
MYSQL_SQL_MODE = env.str(
    "MYSQL_SQL_MODE",
    default="STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION",
)
MYSQL_ISOLATION_LEVEL = "read committed"
# Every sql_mode name MySQL 8 or MariaDB 10.6+ knows (combinations included): a typo is refused at
# start-up, not by the first connection (or, worse, silently by an old server).
_SQL_MODES = frozenset(
    "ALLOW_INVALID_DATES ANSI ANSI_QUOTES DB2 EMPTY_STRING_IS_NULL ERROR_FOR_DIVISION_BY_ZERO HIGH_NOT_PRECEDENCE "
    "IGNORE_BAD_TABLE_OPTIONS IGNORE_SPACE MAXDB MSSQL MYSQL323 MYSQL40 NO_AUTO_CREATE_USER NO_AUTO_VALUE_ON_ZERO "
    "NO_BACKSLASH_ESCAPES NO_DIR_IN_CREATE NO_ENGINE_SUBSTITUTION NO_FIELD_OPTIONS NO_KEY_OPTIONS NO_TABLE_OPTIONS "
    "NO_UNSIGNED_SUBTRACTION NO_ZERO_DATE NO_ZERO_IN_DATE ONLY_FULL_GROUP_BY ORACLE PAD_CHAR_TO_FULL_LENGTH "
    "PIPES_AS_CONCAT POSTGRESQL REAL_AS_FLOAT SIMULTANEOUS_ASSIGNMENT STRICT_ALL_TABLES STRICT_TRANS_TABLES "
    "TIME_ROUND_FRACTIONAL TIME_TRUNCATE_FRACTIONAL TRADITIONAL".split()
)
# One collation for the database, every table and every text column (fix_mysql converts to it,
# check_production reports what differs). Empty: the database's own utf8mb4 default.
MYSQL_COLLATION = env.str("MYSQL_COLLATION", default="")
if MYSQL_COLLATION and not MYSQL_COLLATION.startswith("utf8mb4_"):
    raise ImproperlyConfigured(f"MYSQL_COLLATION must be a utf8mb4 collation (utf8mb4_...), not {MYSQL_COLLATION!r}.")
# Bounded, and always shorter than wait_timeout, so Django never reuses a connection the
# server has already dropped; CONN_HEALTH_CHECKS catches the rest.
CONN_MAX_AGE = env.int("DB_CONN_MAX_AGE", default=60)


def _mysql_init_command() -> str:
    for name, value in (
        ("MYSQL_WAIT_TIMEOUT", MYSQL_WAIT_TIMEOUT),
        ("MYSQL_INTERACTIVE_TIMEOUT", MYSQL_INTERACTIVE_TIMEOUT),
    ):
        if value < 1:
            raise ImproperlyConfigured(f"{name} must be a positive number of seconds, not {value}.")
    unknown = [mode for mode in MYSQL_SQL_MODE.split(",") if mode.strip().upper() not in _SQL_MODES]
    if unknown and MYSQL_SQL_MODE.strip():
        raise ImproperlyConfigured(
            f"MYSQL_SQL_MODE names unknown modes {', '.join(repr(mode) for mode in unknown)}: give a comma-separated "
            "list of MySQL/MariaDB sql_mode names (e.g. STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION)."
        )
    return (
        f"SET SESSION wait_timeout={MYSQL_WAIT_TIMEOUT}, "
        f"SESSION interactive_timeout={MYSQL_INTERACTIVE_TIMEOUT}, "
        f"SESSION sql_mode='{MYSQL_SQL_MODE}'"
    )


if DATABASE_TYPE == "sqlite":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.str("SQLITE_PATH", default=str(VAR_DIR / "taskhub.sqlite3")),
            "OPTIONS": {
                # The web server and the worker are separate processes sharing one file: WAL lets
                # readers run beside the writer, IMMEDIATE takes the write lock at BEGIN (so no
                # upgrade deadlock), and the timeout waits for it instead of "database is locked".
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": env.int("SQLITE_BUSY_TIMEOUT_SECONDS", default=30),
            },
            "CONN_MAX_AGE": 0,
            "TEST": {"NAME": str(VAR_DIR / "test_taskhub.sqlite3")},
        }
    }
elif DATABASE_TYPE == "mysql":
    if CONN_MAX_AGE >= MYSQL_WAIT_TIMEOUT:
        raise ImproperlyConfigured(
            f"DB_CONN_MAX_AGE ({CONN_MAX_AGE}) must be shorter than MYSQL_WAIT_TIMEOUT ({MYSQL_WAIT_TIMEOUT})."
        )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "HOST": env.str("MYSQL_HOST", default="127.0.0.1"),
            "PORT": env.int("MYSQL_PORT", default=3306),
            "USER": env.str("MYSQL_USERNAME", default="root"),
            "PASSWORD": env.str("MYSQL_PASSWORD", default=""),
            "NAME": env.str("MYSQL_DATABASE", default="taskhub"),
            "CONN_MAX_AGE": CONN_MAX_AGE,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                "charset": "utf8mb4",
                "init_command": _mysql_init_command(),
                "isolation_level": MYSQL_ISOLATION_LEVEL,
                "connect_timeout": env.int("MYSQL_CONNECT_TIMEOUT", default=5),
            },
            "TEST": {
                "NAME": env.str("MYSQL_TEST_DATABASE", default="test_taskhub"),
                "CHARSET": "utf8mb4",
                "COLLATION": MYSQL_COLLATION or "utf8mb4_unicode_ci",
            },
        }
    }
else:
    raise ImproperlyConfigured(f"DATABASE_TYPE must be 'sqlite' or 'mysql', not {DATABASE_TYPE!r}.")

# A read replica (docs/SCALING.md): statistics, queue status, task lists and the dashboard may read
# it (core/db/replica.py); everything else, any read inside a transaction and a user's reads for
# DATABASE_REPLICA_STICKY_SECONDS after their own write go to the primary.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
DATABASE_REPLICA_STICKY_SECONDS = env.float("DATABASE_REPLICA_STICKY_SECONDS", default=10.0)
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=5.0)
# A replica that cannot be reached: its reads go to the primary this long before it is tried again.
DATABASE_REPLICA_RETRY_SECONDS = env.float("DATABASE_REPLICA_RETRY_SECONDS", default=5.0)
DATABASE_ROUTERS: list[str] = []


def _replica_database(url: str) -> dict:
    """Return the `replica` alias: the primary's settings with the URL's server, account and database."""
    try:
        parsed = environ.Env.db_url_config(url)
    except Exception as exc:  # django-environ raises several kinds for a malformed URL
        raise ImproperlyConfigured(f"DATABASE_REPLICA_URL is not a database URL ({type(exc).__name__}).") from None
    engine = DATABASES["default"]["ENGINE"]
    if parsed.get("ENGINE") != engine:
        raise ImproperlyConfigured(
            f"DATABASE_REPLICA_URL must name the same kind of database as the primary ({engine.rsplit('.', 1)[-1]}), "
            f"e.g. mysql://user:password@replica-host:3306/{DATABASES['default']['NAME']}."
        )
    replica = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
    for key in ("HOST", "PORT", "USER", "PASSWORD", "NAME"):
        if parsed.get(key) not in (None, ""):
            replica[key] = parsed[key]
    return replica


if DATABASE_REPLICA_URL:
    DATABASES["replica"] = _replica_database(DATABASE_REPLICA_URL)
    DATABASE_ROUTERS = ["core.db.replica.ReplicaRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://taskhub")}

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

JWT_ACCESS_TOKEN_LIFETIME_SECONDS = env.int("JWT_ACCESS_TOKEN_LIFETIME_SECONDS", default=1800)
JWT_REFRESH_TOKEN_LIFETIME_SECONDS = env.int("JWT_REFRESH_TOKEN_LIFETIME_SECONDS", default=7 * 24 * 3600)
JWT_REFRESH_REUSE_GRACE_SECONDS = env.int("JWT_REFRESH_REUSE_GRACE_SECONDS", default=60)
JWT_LEEWAY_SECONDS = env.int("JWT_LEEWAY_SECONDS", default=30)
AUTH_SLOW_THRESHOLD_MS = env.int("AUTH_SLOW_THRESHOLD_MS", default=500)
LOGIN_THROTTLE_RATE = env.str("LOGIN_THROTTLE_RATE", default="10/min")
# Per client address, whatever the username (LOGIN_THROTTLE_RATE is per username and address).
LOGIN_ADDRESS_THROTTLE_RATE = env.str("LOGIN_ADDRESS_THROTTLE_RATE", default="60/min")
# Proxies in front of the app: the client address is taken that far from the end of
# X-Forwarded-For (DRF's NUM_PROXIES). Behind an https proxy one is assumed; 0 trusts REMOTE_ADDR.
NUM_PROXIES = env.int("NUM_PROXIES", default=1 if EXTERNAL_PROTOCOL == "https" else 0)

SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SECRET_KEY,
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=JWT_ACCESS_TOKEN_LIFETIME_SECONDS),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=JWT_REFRESH_TOKEN_LIFETIME_SECONDS),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "LEEWAY": timedelta(seconds=JWT_LEEWAY_SECONDS),
    "AUTH_HEADER_TYPES": ("Bearer",),
    # TaskHub's tokens carry the key fingerprint as `kid` and a keyed password claim (accounts/tokens.py).
    "AUTH_TOKEN_CLASSES": ("accounts.tokens.AccessToken",),
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Bounded and 500-proof (core/parsers.py): every endpoint, the public token endpoints included.
    "DEFAULT_PARSER_CLASSES": ["core.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"login": LOGIN_THROTTLE_RATE, "login_address": LOGIN_ADDRESS_THROTTLE_RATE},
    "NUM_PROXIES": NUM_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "TaskHub API",
    "DESCRIPTION": "Multi-user task queue: submit tasks, watch them run, steer the queues.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The docs UI's assets are served by TaskHub itself (drf-spectacular-sidecar), not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Task queue -----------------------------------------------------------------------------
TASK_PAYLOAD_MAX_BYTES = env.int("TASK_PAYLOAD_MAX_BYTES", default=65536)
# Whole request bodies stay bounded too (payload plus the other fields).
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2 * TASK_PAYLOAD_MAX_BYTES, 262144)

TASKHUB_WORKER_HEARTBEAT_SECONDS = env.float("TASKHUB_WORKER_HEARTBEAT_SECONDS", default=5.0)
TASKHUB_WORKER_STALE_SECONDS = env.float("TASKHUB_WORKER_STALE_SECONDS", default=30.0)
TASKHUB_POLL_INTERVAL_SECONDS = env.float("TASKHUB_POLL_INTERVAL_SECONDS", default=1.0)
# Redis that wakes idle workers when work arrives (tasks.wakeups); empty: workers only poll.
TASKHUB_WAKEUP_URL = env.str("TASKHUB_WAKEUP_URL", default="").strip()
if TASKHUB_WAKEUP_URL and not TASKHUB_WAKEUP_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        "TASKHUB_WAKEUP_URL must be a Redis URL (redis://host:6379/0, rediss://… or unix://…), or empty."
    )
# Tasks one claim takes at most (docs/WORKERS.md#claim-batches).
TASKHUB_CLAIM_BATCH_SIZE = env.int("TASKHUB_CLAIM_BATCH_SIZE", default=50)
TASKHUB_SHUTDOWN_GRACE_SECONDS = env.float("TASKHUB_SHUTDOWN_GRACE_SECONDS", default=30.0)
# Handler modules the worker imports besides the apps' `handlers.py` (dotted paths, comma-separated).
TASKHUB_EXTRA_HANDLER_MODULES = env.list("TASKHUB_EXTRA_HANDLER_MODULES", default=[])
TASKHUB_BACKLOG_MAX_AGE_SECONDS = env.int("TASKHUB_BACKLOG_MAX_AGE_SECONDS", default=600)
TASKHUB_STATS_WINDOW_HOURS = env.int("TASKHUB_STATS_WINDOW_HOURS", default=24)
# A schedule's fire time later than this when a worker first sees it counts as missed (downtime):
# its `misfire` policy applies instead of catching up every missed time.
TASKHUB_SCHEDULE_MISFIRE_GRACE_SECONDS = env.float("TASKHUB_SCHEDULE_MISFIRE_GRACE_SECONDS", default=30.0)

# Django's task framework (docs/DJANGO_TASKS.md): any @task function runs on TaskHub's workers.
# QUEUES empty: every queue in queue_config is accepted (an unknown one is refused at enqueue).
TASKS = {
    "default": {
        "BACKEND": "tasks.backends.TaskHubBackend",
        "QUEUES": [],
        "OPTIONS": {"OWNER": env.str("TASKHUB_TASKS_OWNER", default="taskhub-system")},
    }
}

METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
DB_UNAVAILABLE_RETRY_AFTER_SECONDS = env.int("DB_UNAVAILABLE_RETRY_AFTER_SECONDS", default=5)
# How often each web process records its key fingerprint for check_production (0 = never).
TASKHUB_INSTANCE_REPORT_SECONDS = env.int("TASKHUB_INSTANCE_REPORT_SECONDS", default=60)
# Shortcuts into library internals on the hot paths (core/shortcuts.py): `all`, `none` or names.
TASKHUB_SHORTCUTS = shortcuts.parse(env.str("TASKHUB_SHORTCUTS", default=shortcuts.ALL))

# --- i18n, static ---------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Served by WhiteNoise straight from the apps' static folders: no CDN, no collectstatic needed.
WHITENOISE_USE_FINDERS = True
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.request_context.RequestIdLogFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "taskhub": {"level": LOG_LEVEL, "propagate": True},
    },
}
