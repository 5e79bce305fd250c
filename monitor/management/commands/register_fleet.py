from django.core.management.base import BaseCommand, CommandError

from monitor import registry


class Command(BaseCommand):
    help = "Register every host of a fleet manifest (JSON, as written by sentinel-simulate)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("manifest")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        try:
            hosts = registry.register_manifest(options["manifest"])
        except (OSError, registry.RegistrationError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"registered {len(hosts)} hosts: {', '.join(h.name for h in hosts)}")
