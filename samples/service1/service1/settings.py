"""Settings of the service1 sample: a minimal Django project run by uWSGI behind the gateway.

Everything that differs between a laptop and a host comes from the environment. The
deployment sets MICROSVC_DATA_DIR (the sqlite database lives there) and MICROSVC_STATIC_ROOT
(where collectstatic writes); the operator sets the DJANGO_* variables in the service's env,
and DB_* to use PostgreSQL instead of sqlite (see DATABASES).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Only for local runs and tests: a deployed service must set DJANGO_SECRET_KEY.
INSECURE_DEV_SECRET_KEY = (
    "django-insecure-service1-sample-dev-key-do-not-use-in-production"
)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or INSECURE_DEV_SECRET_KEY

DEBUG = os.environ.get("DJANGO_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}

# The gateway only forwards requests for the hosts nginx serves, so the sample accepts any
# Host by default; set DJANGO_ALLOWED_HOSTS (comma-separated) to restrict it in production.
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "service1.urls"
WSGI_APPLICATION = "service1.wsgi.application"

# The deployment gives every service a writable data directory; a local checkout uses
# data-local/ next to manage.py instead (created on demand, never deployed data).
if os.environ.get("MICROSVC_DATA_DIR"):
    DATA_DIR = Path(os.environ["MICROSVC_DATA_DIR"])
else:
    DATA_DIR = BASE_DIR / "data-local"
    DATA_DIR.mkdir(exist_ok=True)

# PostgreSQL when the environment names a server (several app hosts share one database):
# DB_HOST, DB_PORT (default 5432), DB_NAME and DB_USER (default service1), DB_PASSWORD.
# The virtualenv then needs a driver: add "psycopg[binary]" to the service's requirements.
# Otherwise SQLite in the data directory (one host).
if os.environ.get("DB_HOST"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["DB_HOST"],
            "PORT": os.environ.get("DB_PORT", "5432"),
            "NAME": os.environ.get("DB_NAME", "service1"),
            "USER": os.environ.get("DB_USER", "service1"),
            "PASSWORD": os.environ.get("DB_PASSWORD", ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"connect_timeout": 5},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# A relative STATIC_URL is prefixed with SCRIPT_NAME, so behind the gateway the files are
# at /api/service1/static/, where nginx serves STATIC_ROOT directly.
STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("MICROSVC_STATIC_ROOT")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {
        "handlers": ["console"],
        "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO"),
    },
}
