"""Image-level findings read through a real Label Studio (acceptance).

Readers answer the platform-generated labeling config: a multi-select of the project's
image-level classes, with boxes (a mixed taxonomy) or without any (a classification
preset).  The platform stores exactly what each reader picked, decides the image's
labels when the last read arrives, reports agreement on them, and no reader reaches
another reader's picks.
"""

from __future__ import annotations

import pytest

from annotations.label_studio.config import parse_label_config
from annotations.label_studio.regions import build_result
from annotations.models import ConsensusRun, Image, ReaderAnnotation
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from annotations.services.agreement import agreement_report
from annotations.services.consensus import latest_run
from annotations.services.projects import project_create
from annotations.taxonomy import NO_FINDING
from tests.conftest import ingest_paths, write_png
from tests.label_studio.readers_ls import reader_client

pytestmark = pytest.mark.django_db(transaction=True)


def _setup(label_studio, tmp_path, slug: str, **taxonomy):
    project = project_create(name=f"Findings {slug}", slug=slug, readers_per_image=3,
                             **taxonomy)
    files = [write_png(tmp_path / slug / f"cxr{i}.png", seed=70 + i, size=(400, 360))
             for i in range(2)]
    ingest_paths(project, files)
    rs = [readers.reader_create(email=f"{slug}{i}@example.org", code=f"R{i}")
          for i in (1, 2, 3)]
    readers.assignments_create(project=project)
    assert sync.assignments_push(project) == 6
    return project, rs, list(Image.objects.filter(project=project).order_by("id"))


def _read(label_studio, reader, image, labels, boxes=(), classes=()):
    result = build_result(list(boxes), list(classes), original_width=image.width,
                          original_height=image.height, image_labels=labels)
    task = reader.workspaces.get(kind="reading").tasks.get(image=image)
    return reader_client(label_studio, reader).create_annotation(task.ls_task_id, result)


def test_readers_pick_findings_with_and_without_boxes(label_studio, ls_settings, tmp_path):
    project, (r1, r2, r3), images = _setup(
        label_studio, tmp_path, "mixed", class_names=["Nodule/Mass"],
        image_classes=["Pneumonia", "Edema"])
    ws = r1.workspaces.get(kind="reading")
    config = sync.ws_client(ws).get_project(ws.ls_project_id)["label_config"]
    offered = parse_label_config(config)  # what Label Studio shows the reader
    assert offered.box_classes == ("Nodule/Mass",)
    assert offered.image_classes == ("Pneumonia", "Edema", NO_FINDING)
    img = images[0]
    _read(label_studio, r1, img, ["Pneumonia"], boxes=[[50, 60, 150, 170]],
          classes=["Nodule/Mass"])
    _read(label_studio, r2, img, ["Pneumonia", "Edema"])  # findings, no box
    _read(label_studio, r3, img, [NO_FINDING])
    got = {a.reader.code: a for a in ReaderAnnotation.objects.filter(image=img)}
    assert got["R1"].image_labels == ["Pneumonia"] and got["R1"].boxes.count() == 1
    assert got["R2"].image_labels == ["Edema", "Pneumonia"] and got["R2"].boxes.count() == 0
    assert got["R3"].image_labels == [NO_FINDING]
    run = ConsensusRun.objects.get(project=project, trigger="reads_complete")
    assert run.status == "done", run.reason
    row = run.images.get(image=img)
    assert row.image_labels == ["Pneumonia"]  # 2 of 3; Edema 1 of 3; one box: no consensus
    assert row.meta["image_votes"] == {"Edema": 1, "Pneumonia": 2}
    # blinding: a reader's session reaches neither another reader's task nor its picks
    other = r2.workspaces.get(kind="reading").tasks.get(image=img)
    with pytest.raises(Exception, match="40[34]"):
        reader_client(label_studio, r1)._call("GET", f"/api/tasks/{other.ls_task_id}/")
    own = reader_client(label_studio, r1)._call(
        "GET", f"/api/tasks/{ws.tasks.get(image=img).ls_task_id}/annotations/")
    assert len(own) == 1 and "Edema" not in str(own)
    report = agreement_report(project=project, run=latest_run(project) or run)
    kappa = {k["label"]: k for k in report["image_kappa"]}
    assert set(kappa) == {"Pneumonia", "Edema", NO_FINDING} and kappa["Pneumonia"]["n_images"]
    rows = {(r["reader"], r["label"]): r for r in report["image_reader_vs_consensus"]}
    assert rows[("R3", "Pneumonia")]["fn"] == 1 and rows[("R2", "Edema")]["fp"] == 1


def test_classification_only_project_reads_and_decides(label_studio, ls_settings, tmp_path):
    project, rs, images = _setup(label_studio, tmp_path, "six", taxonomy_preset="cxr_6")
    ws = rs[0].workspaces.get(kind="reading")
    offered = parse_label_config(
        sync.ws_client(ws).get_project(ws.ls_project_id)["label_config"])
    assert offered.box_classes == () and "Pleural effusion" in offered.image_classes
    picks = {"R1": ["Cardiomegaly", "Pleural effusion"], "R2": ["Cardiomegaly"],
             "R3": ["Cardiomegaly", "Pleural effusion"]}
    for reader in rs:
        _read(label_studio, reader, images[1], picks[reader.code])
    run = ConsensusRun.objects.get(project=project, trigger="reads_complete")
    assert run.status == "done", run.reason
    assert sorted(run.images.get(image=images[1]).image_labels) == \
        ["Cardiomegaly", "Pleural effusion"]
