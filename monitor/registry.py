"""Register hosts, one at a time or from a fleet manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from healing import audit
from monitor.models import Host


class RegistrationError(ValueError):
    pass


def register_host(
    *, name: str, agent_url: str, token: str, model_name: str = ""
) -> tuple[Host, bool]:
    """Return (host, created) after creating or updating the host called `name`."""
    if not name or len(name) > 200:
        raise RegistrationError(f"host name {name!r}: use 1 to 200 characters")
    if not token:
        raise RegistrationError(f"host {name}: the agent token is empty")
    try:
        URLValidator(schemes=["http", "https"])(agent_url)
    except ValidationError:
        raise RegistrationError(f"host {name}: {agent_url!r} is not an http(s) URL") from None
    fields = {"agent_url": agent_url, "agent_token": token, "model_name": model_name}
    before = Host.objects.filter(name=name).values(*fields).first()
    host, created = Host.objects.update_or_create(name=name, defaults=fields)
    if before != fields:
        _audit(name, before, fields)
    return host, created


def _audit(name: str, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
    secret = ("agent_token",)
    detail: dict[str, Any] = {"after": audit.masked(after, secret)}
    if before is not None:
        detail["before"] = audit.masked(before, secret)
        detail["secrets_changed"] = [f for f in secret if before[f] != after[f]]
    verb = "update" if before is not None else "create"
    audit.record(None, f"host.{verb}", name, "registered from a command or a fleet manifest",
                 **detail)  # fmt: skip


def register_manifest(path: str | Path) -> list[Host]:
    """Register every host in a manifest: {"hosts": [{"name", "agent_url", "token", ...}]}."""
    try:
        manifest = json.loads(Path(path).read_text())
        entries: list[dict[str, Any]] = manifest["hosts"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RegistrationError(f"{path}: not a fleet manifest ({exc})") from None
    if not isinstance(entries, list):
        raise RegistrationError(f"{path}: 'hosts' must be a list")
    with transaction.atomic():
        return [_register_entry(entry) for entry in entries]


def _register_entry(entry: dict[str, Any]) -> Host:
    try:
        name, url, token = entry["name"], entry["agent_url"], entry["token"]
    except (KeyError, TypeError):
        shown = (
            {k: v for k, v in entry.items() if k != "token"} if isinstance(entry, dict) else entry
        )
        raise RegistrationError(
            f"manifest entry {shown!r} needs name, agent_url and token"
        ) from None
    host, _ = register_host(
        name=name, agent_url=url, token=token, model_name=entry.get("model", "")
    )
    return host
