"""Every route of the product, HTTP and websocket, against the role it needs.

ROUTES is the table of what each route needs. A route that is not in it fails
`test_every_route_has_a_role_in_the_table`: a new page or endpoint cannot ship without one.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import NoReverseMatch, URLPattern, URLResolver, get_resolver, resolve, reverse

from healing.roles import ADMIN, OPERATOR, ROLES, VIEWER
from monitor.routing import websocket_urlpatterns
from sentinel.asgi import application
from tests.conftest import make_user

PUBLIC = None
# URL name -> (the role it needs, the method it answers). Reads are GET, changes are POST.
ROUTES: dict[str, tuple[str | None, str]] = {
    "login": (PUBLIC, "GET"),
    "logout": (PUBLIC, "POST"),
    "admin:index": (ADMIN, "GET"),
    "fleet": (VIEWER, "GET"),
    "host_detail": (VIEWER, "GET"),
    "host_series": (VIEWER, "GET"),
    "state_graph": (VIEWER, "GET"),
    "state_graph_json": (VIEWER, "GET"),
    "approvals": (VIEWER, "GET"),
    "learner": (VIEWER, "GET"),
    "decide": (OPERATOR, "POST"),
    "review": (OPERATOR, "POST"),
    "pause": (OPERATOR, "POST"),
    "end_pause": (OPERATOR, "POST"),
    "incidents": (VIEWER, "GET"),
    "incident_patterns": (VIEWER, "GET"),
    "incident": (VIEWER, "GET"),
    "incident_json": (VIEWER, "GET"),
    "incident_series": (VIEWER, "GET"),
    "incident_csv": (VIEWER, "GET"),
    "incident_ack": (OPERATOR, "POST"),
    "incident_resolve": (OPERATOR, "POST"),
    "incident_note": (OPERATOR, "POST"),
    "audit": (OPERATOR, "GET"),
    "audit_csv": (OPERATOR, "GET"),
    "audit_json": (OPERATOR, "GET"),
}
# Websocket path -> the role it needs to connect. No consumer takes messages from the browser.
SOCKETS: dict[str, str] = {
    "ws/fleet/": VIEWER,
    "ws/hosts/<int:host_id>/": VIEWER,
    "ws/approvals/": VIEWER,
}
# Pages of the admin beyond its index: the same role, checked on a few of them.
ADMIN_PAGES = ("/admin/monitor/host/", "/admin/healing/guardrailpolicy/", "/admin/auth/user/")
SAMPLE_KWARGS = {"int": 1, "string": "gpu-01"}


def _walk(patterns: list[Any], namespace: str = "") -> list[tuple[str, URLPattern]]:
    found = []
    for p in patterns:
        if isinstance(p, URLResolver):
            inner = f"{namespace}{p.namespace}:" if p.namespace else namespace
            found += _walk(p.url_patterns, inner)
        else:
            found.append((f"{namespace}{p.name}", p))
    return found


def route_names() -> set[str]:
    return {name for name, _ in _walk(get_resolver().url_patterns)}


def url_for(name: str, samples: dict[str, Any] = SAMPLE_KWARGS) -> str:
    """The URL of route `name`, its parameters filled in from `samples` by converter."""
    for full, pattern in _walk(get_resolver().url_patterns):
        if full == name:
            converters = {k: type(v).__name__.removesuffix("Converter").lower()
                          for k, v in pattern.pattern.converters.items()}  # fmt: skip
            return reverse(name, kwargs={k: samples[c] for k, c in converters.items()} or None)
    raise NoReverseMatch(name)


def _client(user: Any = None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _below(role: str) -> str | None:
    """The role one step below `role` (None: no role at all)."""
    i = ROLES.index(role)
    return ROLES[i - 1] if i else None


def _user(role: str | None) -> Any:
    return make_user(f"user-{role or 'none'}", role)


def _is_login_redirect(response: Any) -> bool:
    return response.status_code == 302 and response["Location"].startswith("/login/")


def test_every_route_has_a_role_in_the_table() -> None:
    names = {n for n in route_names() if not n.startswith("admin:")} | {"admin:index"}
    missing = sorted(names - set(ROUTES))
    assert not missing, f"routes without a role in tests/test_roles.py ROUTES: {missing}"
    sockets = {str(p.pattern) for p in websocket_urlpatterns}
    assert sockets == set(SOCKETS), "websocket routes and SOCKETS differ"


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(n for n, (role, _) in ROUTES.items() if role))
def test_each_route_refuses_anonymous_users_and_lower_roles(name: str) -> None:
    role, method = ROUTES[name]
    assert role is not None
    try:
        url = url_for(name)
    except NoReverseMatch:
        pytest.skip(f"{name} is not a route of this tree")
    send = (lambda c: c.post(url, {})) if method == "POST" else (lambda c: c.get(url))
    assert _is_login_redirect(send(_client())), f"anonymous {method} {url}"
    assert send(_client(_user(None))).status_code == 403, f"no-role user {method} {url}"
    if (lower := _below(role)) is not None:
        assert send(_client(_user(lower))).status_code == 403, f"{lower} {method} {url}"
    allowed = send(_client(_user(role)))
    assert allowed.status_code != 403 and not _is_login_redirect(allowed), f"{role} {url}"
    if name != "admin:index":  # the admin site checks its role itself
        assert getattr(resolve(url).func, "required_role", None) == role, url


@pytest.mark.django_db
def test_the_admin_pages_are_for_the_admin_role_only() -> None:
    operator, admin = _user(OPERATOR), _user(ADMIN)
    for url in ADMIN_PAGES:
        assert _is_login_redirect(_client().get(url)), url
        assert _client(operator).get(url).status_code == 403, url
        assert _client(admin).get(url).status_code == 200, url
    # The admin's own login page sends anonymous users to the product's (throttled) one.
    assert _is_login_redirect(_client().get("/admin/login/?next=/admin/"))


def _socket(path: str, user: Any = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost")]
    if user is not None:
        cookie = _client(user).cookies["sessionid"].value
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", sorted(SOCKETS))
async def test_each_websocket_refuses_anonymous_users_and_users_without_a_role(
    route: str,
) -> None:
    path = "/" + route.replace("<int:host_id>", "1")
    nobody = await database_sync_to_async(_user)(None)
    allowed = await database_sync_to_async(_user)(SOCKETS[route])
    for user, expected in ((None, 4401), (nobody, 4403)):
        socket = await database_sync_to_async(_socket)(path, user)
        assert await socket.connect() == (False, expected), (route, user)
        await socket.disconnect()
    socket = await database_sync_to_async(_socket)(path, allowed)
    connected, _ = await socket.connect()
    assert connected, route
    await socket.disconnect()


def test_no_websocket_takes_messages_from_the_browser() -> None:
    """The role check at connect is then the only one needed. A consumer that takes messages
    must check the role for each one, and change this test."""
    for route in websocket_urlpatterns:
        consumer = route.callback.consumer_class
        assert consumer.receive is AsyncWebsocketConsumer.receive, consumer.__name__


@pytest.mark.django_db
def test_the_menu_links_only_to_what_the_role_may_open() -> None:
    menus = {role: _client(_user(role)).get("/").content.decode() for role in ROLES}
    assert 'href="/audit/"' not in menus[VIEWER] and 'href="/admin/"' not in menus[VIEWER]
    assert 'href="/audit/"' in menus[OPERATOR] and 'href="/admin/"' not in menus[OPERATOR]
    assert 'href="/audit/"' in menus[ADMIN] and 'href="/admin/"' in menus[ADMIN]
