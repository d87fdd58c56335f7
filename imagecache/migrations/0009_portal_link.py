from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("imagecache", "0008_charts"),
    ]

    operations = [
        migrations.CreateModel(
            name="PortalLink",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("query_hash", models.CharField(max_length=64, unique=True)),
                ("query_json", models.TextField()),
                ("url", models.CharField(blank=True, max_length=2048)),
                ("fetched_at", models.DateTimeField(blank=True, null=True)),
                ("asked_at", models.DateTimeField(blank=True, null=True)),
                ("error_message", models.TextField(blank=True)),
            ],
        ),
    ]
