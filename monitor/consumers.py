from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from monitor import live

UNAUTHORIZED = 4401  # not signed in
FORBIDDEN = 4403  # signed in, without the viewer role
NOT_FOUND = 4404


async def _roles(consumer: AsyncWebsocketConsumer) -> dict[str, bool] | None:
    """Return the user's roles, or close the socket and return None when they may not watch.

    The consumers only send: they take no messages from the browser, so the check at connect
    is the only one (the approvals buttons post over HTTP, where each request is checked)."""
    from healing.roles import roles_of

    user = consumer.scope["user"]
    if not user.is_authenticated:
        await consumer.close(code=UNAUTHORIZED)
        return None
    roles = await database_sync_to_async(roles_of)(user)
    if not roles["viewer"]:
        await consumer.close(code=FORBIDDEN)
        return None
    return roles


class FleetConsumer(AsyncWebsocketConsumer):
    """Sends re-rendered host rows to the fleet page as hosts are polled."""

    async def connect(self) -> None:
        if await _roles(self) is None:
            return
        await self.channel_layer.group_add(live.FLEET_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(live.FLEET_GROUP, self.channel_name)

    async def hosts_updated(self, event: live.HostsUpdated) -> None:
        await self.send(text_data=event["html"])


class HostConsumer(AsyncWebsocketConsumer):
    """Sends one host's new chart points to its host page."""

    async def connect(self) -> None:
        if await _roles(self) is None:
            return
        self.host_id = str(self.scope["url_route"]["kwargs"]["host_id"])
        await self.channel_layer.group_add(live.CHECKPOINTS_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(live.CHECKPOINTS_GROUP, self.channel_name)

    async def checkpoints_stored(self, event: live.CheckpointsStored) -> None:
        point: dict[str, Any] | None = event["points"].get(self.host_id)
        if point is None:
            return
        message = {"point": point, "stored_at": event["stored_at"]}
        if panels := event["panels"].get(self.host_id):
            message["panels"] = panels
        await self.send(text_data=json.dumps(message))

    async def hosts_analysed(self, event: live.HostsAnalysed) -> None:
        message: dict[str, Any] = {}
        if predictions := event["predictions"].get(self.host_id):
            message["predictions"] = predictions
        if forecasts := event["forecasts"].get(self.host_id):
            message["forecasts"] = forecasts
        if message:
            await self.send(text_data=json.dumps(message))


class ApprovalsConsumer(AsyncWebsocketConsumer):
    """Sends the redrawn approvals queue: with decision buttons to operators, without to others."""

    async def connect(self) -> None:
        if (roles := await _roles(self)) is None:
            return
        self.operator = roles["operator"]
        await self.channel_layer.group_add(live.APPROVALS_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(live.APPROVALS_GROUP, self.channel_name)

    async def proposals_changed(self, event: live.ProposalsChanged) -> None:
        await self.send(text_data=event["operator_html" if self.operator else "viewer_html"])
