from django.core.management.base import BaseCommand, CommandError

from monitor import registry


class Command(BaseCommand):
    help = "Register a GPU host (or update it): its name, its agent's URL and the agent's token."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("name")
        parser.add_argument("agent_url", help="e.g. http://gpu-01:9300")
        parser.add_argument("--token-file", required=True, help="file holding the agent's token")
        parser.add_argument("--model", default="", help="served model name, for display")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        try:
            with open(options["token_file"]) as handle:
                token = handle.read().strip()
            host, created = registry.register_host(
                name=options["name"],
                agent_url=options["agent_url"],
                token=token,
                model_name=options["model"],
            )
        except (OSError, registry.RegistrationError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{'registered' if created else 'updated'} {host.name} at {host.agent_url}"
        )
