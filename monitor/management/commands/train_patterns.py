from django.core.management.base import BaseCommand

from monitor import tasks, training
from sentinel.locks import advisory_lock


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
        with advisory_lock(*training.TRAINING_LOCK) as free:
            if not free:
                self.stdout.write(training.BUSY)
                return
            row = training.train()
        if row is None:
            self.stdout.write("kept the current model: the fleet's history is not enough yet")
        else:
            self.stdout.write(f"trained pattern model v{row.version}: {row.card.get('provenance')}")
