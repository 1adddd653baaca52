"""URLs of service1, relative to the route the gateway serves it at (SCRIPT_NAME)."""

from django.urls import include, path

urlpatterns = [
    path("", include("api.urls")),
]
