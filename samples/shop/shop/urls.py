"""URLs of shop, relative to the route the gateway serves it at (SCRIPT_NAME)."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("health/", views.health, name="health"),
    path("runs/", views.runs, name="runs"),
]
