"""Image ids unique platform-wide (they were unique per project only).

Image files, the image API and the viewer find an image by its id alone, so
two projects holding the same file (the same id) could be served each
other's derivatives.  New ingests key the id by the project
(``pseudonym.image_pseudo_id``).  Before the constraint is added, an id that
already appears in several projects keeps it in the project that imported it
first; in each other project it gets the id a new ingest would give it there,
and that project's consensus and pre-labelling run scopes are rewritten to
match.  Nothing is deleted; rows without a collision are left as they are.
"""

from collections import defaultdict

from django.conf import settings
from django.db import migrations, models
from django.db.models import Count

from annotations.imaging.pseudonym import image_pseudo_id


def _rekey_cross_project_duplicates(apps, schema_editor):
    Image = apps.get_model("annotations", "Image")
    ConsensusRun = apps.get_model("annotations", "ConsensusRun")
    PrelabelRun = apps.get_model("annotations", "PrelabelRun")
    shared = list(Image.objects.values("pseudo_id").annotate(n=Count("id"))
                  .filter(n__gt=1).values_list("pseudo_id", flat=True))
    renamed: dict[int, dict[str, str]] = defaultdict(dict)  # project -> old -> new
    for old in shared:
        for image in Image.objects.filter(pseudo_id=old).order_by("id")[1:]:
            new = image_pseudo_id(settings.PSEUDONYM_KEY, str(image.project_id), old)
            Image.objects.filter(pk=image.pk).update(pseudo_id=new)
            renamed[image.project_id][old] = new
    for project_id, mapping in renamed.items():
        for model in (ConsensusRun, PrelabelRun):
            for run in model.objects.filter(project_id=project_id):
                scope = [mapping.get(i, i) for i in run.image_scope]
                if scope != run.image_scope:
                    model.objects.filter(pk=run.pk).update(image_scope=scope)


class Migration(migrations.Migration):

    dependencies = [("annotations", "0003_deidentification")]

    operations = [
        migrations.RunPython(_rekey_cross_project_duplicates, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="image", name="uniq_image"),
        migrations.AlterField(
            model_name="image",
            name="pseudo_id",
            field=models.CharField(max_length=64, unique=True),
        ),
    ]
