from django.contrib import admin

from monitor.models import Checkpoint, Host, IngestError, LifecycleTransition


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "agent_url",
        "model_name",
        "enabled",
        "status",
        "lifecycle_state",
        "last_seen_at",
    ]
    list_filter = ["enabled", "status", "lifecycle_state"]
    search_fields = ["name", "model_name", "agent_url"]
    readonly_fields = [
        "status",
        "status_reason",
        "lifecycle_state",
        "last_seen_at",
        "last_polled_at",
        "latest",
        "created_at",
    ]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Recorded facts: visible to admins, never edited by hand."""

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["host", "collected_at", "lifecycle_state"]
    list_select_related = ["host"]
    show_full_result_count = False  # counting the big table on every page view is too slow


@admin.register(LifecycleTransition)
class LifecycleTransitionAdmin(ReadOnlyAdmin):
    list_display = ["host", "at", "from_state", "to_state", "trigger"]
    list_filter = ["to_state"]


@admin.register(IngestError)
class IngestErrorAdmin(ReadOnlyAdmin):
    list_display = ["host", "at", "kind", "message"]
    list_filter = ["kind"]
