from django.urls import path

from healing import audit_views

urlpatterns = [
    path("audit/", audit_views.audit, name="audit"),
    path("audit/export.csv", audit_views.audit_csv, name="audit_csv"),
    path("audit/export.json", audit_views.audit_json, name="audit_json"),
]
