"""One Label Studio organization per workspace, per-workspace webhooks, frozen reads,
adjudicators per project."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("annotations", "0001_initial")]

    operations = [
        migrations.RemoveField(model_name="labelstudioaccount", name="reader"),
        migrations.DeleteModel(name="LabelStudioAccount"),
        migrations.RemoveConstraint(model_name="protocolviolation", name="uniq_violation"),
        migrations.AddField(
            model_name="protocolviolation", name="content_digest",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="protocolviolation", name="kind",
            field=models.CharField(choices=[("foreign_annotator", "Foreign Annotator"),
                                            ("after_unblinding", "After Unblinding")],
                                   default="foreign_annotator", max_length=24),
        ),
        migrations.AddConstraint(
            model_name="protocolviolation",
            constraint=models.UniqueConstraint(
                fields=("ls_annotation_id", "kind", "content_digest"), name="uniq_violation"),
        ),
        migrations.AddField(
            model_name="reader", name="adjudicates",
            field=models.ManyToManyField(blank=True, related_name="adjudicators",
                                         to="annotations.project"),
        ),
        migrations.AddField(
            model_name="webhookevent", name="workspace",
            field=models.ForeignKey(blank=True, null=True,
                                    on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="webhook_events", to="annotations.workspace"),
        ),
        migrations.AddField(model_name="workspace", name="ls_organization_id",
                            field=models.PositiveIntegerField(null=True, unique=True)),
        migrations.AddField(model_name="workspace", name="ls_reader_user_id",
                            field=models.PositiveIntegerField(null=True, unique=True)),
        migrations.AddField(model_name="workspace", name="ls_service_user_id",
                            field=models.PositiveIntegerField(null=True, unique=True)),
        migrations.AddField(model_name="workspace", name="service_token",
                            field=models.CharField(blank=True, max_length=128)),
    ]
