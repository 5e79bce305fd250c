from django.urls import path

from monitor import views

urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("hosts/<str:name>/", views.host_detail, name="host_detail"),
    path("hosts/<str:name>/series.json", views.host_series, name="host_series"),
]
