import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from healing.roles import ADMIN, OPERATOR


class Command(BaseCommand):
    help = "Create (or reset) an operator account and print its password once."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("username", nargs="?", default="operator")
        parser.add_argument("--staff", action="store_true", help="may use the admin")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        password = secrets.token_urlsafe(12)
        user, created = get_user_model().objects.get_or_create(username=options["username"])
        user.set_password(password)
        user.is_staff = user.is_superuser = options["staff"]
        user.save()
        # Operators decide on proposals; staff are admins too (policies, strategies).
        roles = [OPERATOR, ADMIN] if options["staff"] else [OPERATOR]
        user.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in roles))
        verb = "created" if created else "reset"
        self.stdout.write(f"{verb} user {user.username!r} with password {password!r}")
