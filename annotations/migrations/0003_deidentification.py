from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("annotations", "0002_label_studio_isolation")]

    operations = [
        migrations.AddField(
            model_name="project",
            name="deid_retain_patient_characteristics",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="ingestitem",
            name="quarantined_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="ingestitem",
            name="original_purged_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
