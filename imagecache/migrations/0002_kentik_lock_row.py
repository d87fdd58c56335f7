from django.db import migrations

KENTIK_LOCK = "kentik-calls"


def create_lock(apps, schema_editor):
    apps.get_model("imagecache", "Lock").objects.get_or_create(name=KENTIK_LOCK)


class Migration(migrations.Migration):
    dependencies = [("imagecache", "0001_initial")]

    operations = [migrations.RunPython(create_lock, migrations.RunPython.noop)]
