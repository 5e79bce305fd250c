"""Admins edit guardrails and strategy settings here; every change is audited. The audit log
is read-only: it can be browsed, never edited or deleted."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
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


class _Audited(admin.ModelAdmin):
    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        before = model_to_dict(type(obj).objects.get(pk=obj.pk)) if change else {}
        super().save_model(request, obj, form, change)
        after = model_to_dict(obj)
        name = type(obj).__name__.lower()
        audit.record(
            request.user,
            f"{name}.{'update' if change else 'create'}",
            str(obj),
            before=_jsonable(before),
            after=_jsonable(after),
        )

    def delete_model(self, request: Any, obj: Any) -> None:
        audit.record(
            request.user,
            f"{type(obj).__name__.lower()}.delete",
            str(obj),
            before=_jsonable(model_to_dict(obj)),
        )
        super().delete_model(request, obj)


@admin.register(GuardrailPolicy)
class GuardrailPolicyAdmin(_Audited):
    form = PolicyForm
    list_display = ("name", "failure_type", "severity", "condition", "hold_s", "enabled")
    list_filter = ("enabled", "severity", "failure_type")


@admin.register(StrategySetting)
class StrategySettingAdmin(_Audited):
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


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | list | dict | type(None)) else str(v)
        for k, v in data.items()
    }
