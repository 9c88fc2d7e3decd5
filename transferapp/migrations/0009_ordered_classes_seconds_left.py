from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("transferapp", "0008_batch_predictions"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="seconds_left",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="project",
            name="ordered_classes",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="project",
            name="class_order",
            field=models.JSONField(blank=True, default=list),
        ),
    ]
