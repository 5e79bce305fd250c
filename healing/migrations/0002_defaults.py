"""Load the default guardrails and per-strategy settings (edited in the UI afterwards)."""

from django.db import migrations


def load(apps, schema_editor):
    from healing.defaults import load

    load(apps.get_model("healing", "GuardrailPolicy"), apps.get_model("healing", "StrategySetting"))


class Migration(migrations.Migration):
    dependencies = [("healing", "0001_initial")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
