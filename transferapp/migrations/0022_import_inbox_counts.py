from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('transferapp', '0021_importjob_into_inbox'),
    ]

    operations = [
        migrations.AddField(model_name='importjob', name='inbox', field=models.PositiveIntegerField(default=0)),
        migrations.AddField(model_name='importjob', name='missing_rows', field=models.PositiveIntegerField(default=0)),
        migrations.AddField(model_name='importjob', name='labels_file', field=models.CharField(blank=True, max_length=500)),
        migrations.AddField(model_name='importreportrow', name='inbox', field=models.BooleanField(default=False)),
        migrations.AddField(model_name='importreportrow', name='missing', field=models.BooleanField(default=False)),
    ]
