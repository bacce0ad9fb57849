"""The PHI probe set, ingested, pushed to Label Studio and read there: no probe value
reaches Label Studio's database, files, log, export or the webhook events it sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotations.imaging.synthetic.phi_probes import write_probe_set
from annotations.label_studio.regions import build_result
from annotations.models import Image, WebhookEvent
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from tests.conftest import ingest_paths
from tests.label_studio.readers_ls import reader_client

pytestmark = pytest.mark.django_db(transaction=True)


def test_no_probe_value_reaches_label_studio(label_studio, ls_settings, project, tmp_path):
    probes = write_probe_set(tmp_path / "probes")
    project.readers_per_image = 1
    project.save()
    ingest_paths(project, probes.files)
    images = list(Image.objects.filter(project=project))
    assert images, "the probe set must import at least one image"
    reader = readers.reader_create(email="probe@example.org", code="R1")
    readers.assignments_create(project=project)
    assert sync.assignments_push(project) == len(images)
    ws = reader.workspaces.get()
    image = images[0]
    result = build_result([[10, 10, 60, 60]], ["Nodule/Mass"], original_width=image.width,
                          original_height=image.height)
    reader_client(label_studio, reader).create_annotation(
        ws.tasks.get(image=image).ls_task_id, result)
    assert WebhookEvent.objects.filter(workspace=ws, status="processed").exists()

    data_dir = Path(label_studio.server.data_dir)
    stores: list[tuple[str, bytes]] = [
        (str(p), p.read_bytes()) for p in sorted(data_dir.rglob("*")) if p.is_file()]
    export = sync.ws_client(ws).export_project_annotations(ws.ls_project_id)
    stores.append(("export", repr(export).encode()))
    stores += [(f"event {e.pk}", repr(e.payload).encode())
               for e in WebhookEvent.objects.all()]
    assert any(name.endswith("label_studio.sqlite3") for name, _ in stores)
    leaks = [(value, where, name) for value, where in probes.probes.items()
             for name, blob in stores if value.encode() in blob]
    assert leaks == [], leaks[:10]
    print(f"{len(probes.probes)} probes, {len(stores)} Label Studio stores scanned")
