from django.db import migrations


def create_default_queue(apps, schema_editor):
    QueueConfig = apps.get_model("tasks", "QueueConfig")
    QueueConfig.objects.get_or_create(
        name="default", defaults={"description": "The queue tasks go to when none is named."}
    )


class Migration(migrations.Migration):
    dependencies = [("tasks", "0001_initial")]

    operations = [migrations.RunPython(create_default_queue, migrations.RunPython.noop)]
