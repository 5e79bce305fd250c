from django.urls import path

from monitor import views

urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("graph/", views.state_graph, name="state_graph"),
    path("graph.json", views.state_graph_json, name="state_graph_json"),
    path("hosts/<str:name>/", views.host_detail, name="host_detail"),
    path("hosts/<str:name>/series.json", views.host_series, name="host_series"),
]
