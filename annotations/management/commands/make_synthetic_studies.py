"""``python manage.py make_synthetic_studies --n N --out DIR --seed S``

Writes synthetic chest radiograph DICOMs with known lesions, their ground truth
and simulated readers (VinBigData CSV format).  See ``imaging.synthetic``.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand

from annotations.imaging.synthetic import generate_studies


class Command(BaseCommand):
    help = "Generate synthetic chest X-ray DICOM studies with ground truth and readers."

    def add_arguments(self, parser):
        parser.add_argument("--n", type=int, default=20)
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--anatomy", choices=["phantom", "ct"], default="phantom")
        parser.add_argument("--readers", type=int, default=5)

    def handle(self, *args, n, out, seed, anatomy, readers, **opts):
        res = generate_studies(out, n, seed, anatomy=anatomy, n_readers=readers)
        self.stdout.write(f"{len(res.files)} DICOM files in {out}")
        self.stdout.write(f"ground truth: {res.ground_truth_csv}")
        self.stdout.write(f"readers: {res.readers_csv}")
