from django.apps import AppConfig


class HealingConfig(AppConfig):
    name = "healing"
    verbose_name = "Self-healing"

    def ready(self) -> None:
        from healing import logins

        logins.connect()
