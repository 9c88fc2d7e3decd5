from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('transferapp', '0020_inbox_and_map'),
    ]

    operations = [
        migrations.AddField(
            model_name='importjob',
            name='into_inbox',
            field=models.BooleanField(default=False),
        ),
    ]
