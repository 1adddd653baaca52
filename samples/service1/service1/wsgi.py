"""WSGI entry point: uWSGI loads ``service1.wsgi`` and calls ``application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "service1.settings")

application = get_wsgi_application()
