from django.core.management.base import BaseCommand
from django.utils import timezone

from monitor import tasks, training


class Command(BaseCommand):
    help = (
        "Train the pattern model: on this fleet's failures when it has enough, else on simulator "
        "history (the cold start). Queued for a worker unless --here."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--here", action="store_true", help="train in this process, now")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        if not options["here"]:
            tasks.train_patterns_if_needed.delay()
            self.stdout.write("queued: a worker on the 'learning' queue trains when needed")
            return
        self.stdout.write(training.train_if_needed(timezone.now(), always=True))
