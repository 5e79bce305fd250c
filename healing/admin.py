"""Admins edit guardrails, strategy settings, hosts (monitor/admin.py) and users here; every
change is audited. The audit log is read-only: it can be browsed, never edited or deleted,
not even by a superuser."""

from __future__ import annotations

from typing import Any

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.forms.models import model_to_dict

from healing import audit
from healing.models import AuditEntry, GuardrailPolicy, StrategySetting
from mitigations.guardrails import check_policy


class PolicyForm(forms.ModelForm):
    class Meta:
        model = GuardrailPolicy
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for problem in check_policy(data):
            field, _, message = problem.partition(": ")
            target = field if field in self.fields else None
            self.add_error(target, message if target else problem)
        return data


class AuditedAdmin(admin.ModelAdmin):
    """A model admin whose every save and delete writes an audit entry with the row before and
    after. Values of `secret_fields` are masked: the entry says only that they changed."""

    audit_name = ""  # the first word of the audit action; the model's name when empty
    secret_fields: tuple[str, ...] = ()

    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        before = type(obj).objects.get(pk=obj.pk) if change else None
        obj._audit_before = model_to_dict(before) if before is not None else {}
        super().save_model(request, obj, form, change)

    # Django calls these once the row and its many-to-many fields are saved: the "after" is whole.
    def log_addition(self, request: Any, obj: Any, message: Any) -> Any:
        self._record(request, obj, "create", message)
        return super().log_addition(request, obj, message)

    def log_change(self, request: Any, obj: Any, message: Any) -> Any:
        self._record(request, obj, "update", message)
        return super().log_change(request, obj, message)

    def delete_model(self, request: Any, obj: Any) -> None:
        self._record_delete(request, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for obj in queryset:
            self._record_delete(request, obj)
        super().delete_queryset(request, queryset)

    def _record(self, request: Any, obj: Any, verb: str, message: Any) -> None:
        before = getattr(obj, "_audit_before", None)
        after = model_to_dict(obj)
        detail: dict[str, Any] = {"after": self._masked(after), "message": audit.jsonable(message)}
        if before is not None:  # None: a change made outside save_model (a new password)
            detail["before"] = self._masked(before)
            detail["secrets_changed"] = [
                f for f in self.secret_fields if before.get(f) != after.get(f)
            ]
        audit.record(request.user, f"{self._name(obj)}.{verb}", str(obj), **detail)

    def _record_delete(self, request: Any, obj: Any) -> None:
        before = self._masked(model_to_dict(obj))
        audit.record(request.user, f"{self._name(obj)}.delete", str(obj), before=before)

    def _name(self, obj: Any) -> str:
        return self.audit_name or type(obj).__name__.lower()

    def _masked(self, row: dict[str, Any]) -> dict[str, Any]:
        return audit.masked(row, self.secret_fields)


@admin.register(GuardrailPolicy)
class GuardrailPolicyAdmin(AuditedAdmin):
    audit_name = "policy"
    form = PolicyForm
    list_display = ("name", "failure_type", "severity", "condition", "hold_s", "enabled")
    list_filter = ("enabled", "severity", "failure_type")


@admin.register(StrategySetting)
class StrategySettingAdmin(AuditedAdmin):
    audit_name = "strategy"
    list_display = ("strategy", "auto_enabled", "shadow", "threshold")
    list_editable = ("auto_enabled", "shadow", "threshold")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "action", "target", "reason")
    list_filter = ("action", "actor")
    search_fields = ("target", "reason", "actor")

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


# Users and groups: Django's own admins, audited; password hashes never reach the audit log.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class AuditedUserAdmin(AuditedAdmin, UserAdmin):
    audit_name = "user"
    secret_fields = ("password",)


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdmin, GroupAdmin):
    audit_name = "group"


# Login lockouts (django-axes): deleting an attempt unlocks that username and address early.
admin.site.unregister(AccessAttempt)


@admin.register(AccessAttempt)
class AuditedAccessAttemptAdmin(AuditedAdmin, AccessAttemptAdmin):
    audit_name = "lockout"  # "lockout.delete": an admin lifted it
