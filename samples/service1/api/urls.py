from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("health/", views.health, name="health"),
    path("go/", views.go, name="go"),
    path("items/", views.items, name="items"),
]
