"""The Celery app of shop: ``celery -A shop worker`` and ``celery -A shop beat`` load it.

Its settings are Django's, under the ``CELERY_`` prefix (the broker is $CELERY_BROKER_URL, read
in shop.settings); beat sends ``shop.tasks.record`` every RECORD_EVERY seconds.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

RECORD_EVERY = 2.0

app = Celery("shop", include=["shop.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.beat_schedule = {
    "record-every-2-seconds": {
        "task": "shop.tasks.record",
        "schedule": RECORD_EVERY,
        "args": ("beat",),
    },
}
