"""The shield tells a failing query from a failing Kentik: a fetch counts its
calls as the probe that failed on its query (in place of its count of 429s,
which no longer fail a fetch), and the Kentik lock row remembers which query
failed so last."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("imagecache", "0006_entry_tally")]

    operations = [
        migrations.RenameField(
            model_name="fetch", old_name="rate_limited", new_name="probe_failures"
        ),
        migrations.AddField(
            model_name="lock",
            name="failed_query",
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
