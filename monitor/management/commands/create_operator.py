import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from healing import audit
from healing.roles import ADMIN, OPERATOR, ROLES


class Command(BaseCommand):
    help = "Create (or reset) an account with one role and print its password once."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("username", nargs="?", default="operator")
        parser.add_argument(
            "--role", choices=ROLES, default=OPERATOR,
            help="viewer: sees everything; operator: also decides and pauses; admin: also "
            "edits policies, strategies, hosts and users (default operator)",
        )  # fmt: skip
        parser.add_argument("--staff", action="store_true", help="a superuser (every role)")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        password = secrets.token_urlsafe(12)
        user, created = get_user_model().objects.get_or_create(username=options["username"])
        user.set_password(password)
        user.is_staff = user.is_superuser = options["staff"]
        user.save()
        # One role group, the asked one: a reset may lower a role.
        role = ADMIN if options["staff"] else options["role"]
        user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(name=role))
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        verb = "created" if created else "reset"
        action = "user.create" if created else "user.reset"
        reason = "with manage.py create_operator"
        audit.record(None, action, user.username, reason, role=role, superuser=user.is_superuser)
        self.stdout.write(f"{verb} user {user.username!r} with password {password!r}")
