"""A fetch keeps the X-Request-ID of the request that started it, which the
worker's lines about it carry."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("imagecache", "0009_portal_link")]

    operations = [
        migrations.AddField(
            model_name="fetch",
            name="request_id",
            field=models.CharField(blank=True, max_length=128),
        ),
    ]
