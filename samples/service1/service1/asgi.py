"""ASGI entry point (``interface: asgi``, ``module: service1.asgi:application``): the same project
served by uvicorn; Django takes the route from the ASGI ``root_path`` as its SCRIPT_NAME, so
reverse() and static() carry the prefix as under uWSGI."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "service1.settings")

application = get_asgi_application()
