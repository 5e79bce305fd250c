from typing import Any

from django import forms
from django.contrib import admin

from healing.admin import AuditedAdmin
from monitor.models import Checkpoint, Host, IngestError, LifecycleTransition


class HostForm(forms.ModelForm):
    """The agent token is a secret: never drawn into the page; left blank, it stays as it was."""

    agent_url = forms.URLField(
        max_length=500, assume_scheme="http", help_text=Host._meta.get_field("agent_url").help_text
    )
    agent_token = forms.CharField(
        required=False,
        max_length=200,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Bearer token the agent expects. Leave blank to keep the current one.",
    )

    class Meta:
        model = Host
        fields = "__all__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["agent_token"] = ""  # so a blank field is no change, and no copy is drawn

    def clean_agent_token(self) -> str:
        token: str = self.cleaned_data["agent_token"]
        if token:
            return token
        if self.instance.pk:
            return str(Host.objects.values_list("agent_token", flat=True).get(pk=self.instance.pk))
        raise forms.ValidationError("Give the token the agent expects.")


@admin.register(Host)
class HostAdmin(AuditedAdmin):
    form = HostForm
    audit_name = "host"
    secret_fields = ("agent_token",)
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
