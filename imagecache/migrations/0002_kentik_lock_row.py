from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

KENTIK_LOCK = "kentik-calls"


def create_lock(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("imagecache", "Lock").objects.get_or_create(name=KENTIK_LOCK)


class Migration(migrations.Migration):
    dependencies = [("imagecache", "0001_initial")]

    operations = [migrations.RunPython(create_lock, migrations.RunPython.noop)]
