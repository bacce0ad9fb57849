"""Make many annotations inside a running Label Studio with Label Studio's own models.

    <label-studio venv>/bin/python bench/ls_reads.py JOBS.jsonl

Run by ``bench.scale`` in Label Studio's environment (its virtualenv, its settings, its
data folder), never by the platform.  Each line of ``JOBS.jsonl`` is
``{"task": id, "user": id, "result": [...]}``: one annotation by that user on that task.

Why not the API for all of them: a save through the labeling screen's API costs Label
Studio 100-150 ms at 3,000 tasks a workspace, so the 54,000 reads of a VinDr-CXR-sized
project would take more than two hours to set up before anything is measured.
``Annotation.objects.create`` runs the same model code and signals as that save (the
task's ``is_labeled`` and counters, the project summary, drafts), without the HTTP and
serializer layers; ``bench.scale`` still makes a sample of the reads through the API and
reports what a save costs there.  Standard library and Label Studio only.
"""

from __future__ import annotations

import json
import sys
import time


def main(path: str) -> int:
    import os

    import label_studio
    # Label Studio's apps (tasks, projects...) import each other as top-level packages:
    # its launcher puts its own folder first on the path, and so must this script
    sys.path.insert(0, os.path.dirname(label_studio.__file__))
    import django

    django.setup()
    from django.db import transaction
    from tasks.models import Annotation, Task

    with open(path) as f:
        jobs = [json.loads(line) for line in f if line.strip()]
    projects = dict(Task.objects.filter(id__in=[j["task"] for j in jobs]).values_list(
        "id", "project_id"))
    started, made = time.perf_counter(), 0
    for start in range(0, len(jobs), 500):
        with transaction.atomic():
            for job in jobs[start:start + 500]:
                Annotation.objects.create(
                    task_id=job["task"], project_id=projects[job["task"]],
                    completed_by_id=job["user"], updated_by_id=job["user"],
                    result=job["result"])
                made += 1
        if made % 5000 < 500:
            print(f"  (setup) {made}/{len(jobs)} reads, {time.perf_counter() - started:.0f} s",
                  flush=True)
    return 0 if made == len(jobs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
