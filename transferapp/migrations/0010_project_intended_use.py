from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("transferapp", "0009_ordered_classes_seconds_left"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="intended_use",
            field=models.TextField(blank=True, default=""),
        ),
    ]
