from django.urls import path

from healing import incident_views, views

urlpatterns = [
    path("approvals/", views.approvals, name="approvals"),
    path("proposals/<int:proposal_id>/decide", views.decide, name="decide"),
    path("proposals/<int:proposal_id>/review", views.review, name="review"),
    path("learner/", views.learner, name="learner"),
    path("pauses/", views.pause, name="pause"),
    path("pauses/<int:pause_id>/end", views.end_pause, name="end_pause"),
    path("incidents/", incident_views.incident_list, name="incidents"),
    path("incidents/patterns/", incident_views.incident_patterns, name="incident_patterns"),
    path("incidents/<int:pk>/", incident_views.incident_detail, name="incident"),
    path("incidents/<int:pk>.json", incident_views.incident_json, name="incident_json"),
    path("incidents/<int:pk>/series.json", incident_views.incident_series, name="incident_series"),
    path("incidents/<int:pk>.csv", incident_views.incident_csv, name="incident_csv"),
    path("incidents/<int:pk>/acknowledge", incident_views.acknowledge, name="incident_ack"),
    path("incidents/<int:pk>/resolve", incident_views.resolve, name="incident_resolve"),
    path("incidents/<int:pk>/note", incident_views.note, name="incident_note"),
]
