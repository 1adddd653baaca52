"""Settings of the shop sample: Django behind the gateway, a Celery worker and Celery beat.

Everything that differs between a laptop and a host comes from the environment. The
deployment sets MICROSVC_DATA_DIR (the sqlite database and the tasks' record live there) and
MICROSVC_STATIC_ROOT (where collectstatic writes); the operator sets CELERY_BROKER_URL and the
DJANGO_* variables in the service's env.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Only for local runs and tests: a deployed service must set DJANGO_SECRET_KEY.
INSECURE_DEV_SECRET_KEY = "django-insecure-shop-sample-dev-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or INSECURE_DEV_SECRET_KEY

DEBUG = os.environ.get("DJANGO_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}

# The gateway only forwards requests for the hosts nginx serves; DJANGO_ALLOWED_HOSTS
# (comma-separated) restricts them further.
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"

# The deployment gives every service a writable data directory; a local checkout uses
# data-local/ next to manage.py instead (created on demand, never deployed data).
if os.environ.get("MICROSVC_DATA_DIR"):
    DATA_DIR = Path(os.environ["MICROSVC_DATA_DIR"])
else:
    DATA_DIR = BASE_DIR / "data-local"
    DATA_DIR.mkdir(exist_ok=True)

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

STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("MICROSVC_STATIC_ROOT")

# Celery (shop/celery.py reads every CELERY_* setting). The broker URL may hold a password:
# it comes from the service's env, never from the code or a worker's argv.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
# The tasks' record: one JSON line per run of shop.tasks.record (see shop/tasks.py).
SHOP_TASK_RECORD = DATA_DIR / "task-runs.jsonl"

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
