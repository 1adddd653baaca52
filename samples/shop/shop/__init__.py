"""shop: a Django project with a Celery worker and beat (the docs' worked example, for real).

Importing the Celery app here is Celery's own Django layout: the web process, ``manage.py`` and
``celery -A shop`` all configure the same app from the Django settings.
"""

from .celery import app as celery_app

__all__ = ("celery_app",)
