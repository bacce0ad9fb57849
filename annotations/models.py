"""The platform's data model.

Coordinates: every box is stored in absolute pixels of the ORIGINAL image
(``x_min, y_min, x_max, y_max``, VinBigData convention); conversions to Label
Studio percent, COCO, YOLO or VOC happen only at the edges.

Identity: nothing here holds patient identity.  Studies and images are keyed by
pseudonymous ids (keyed HMAC of the DICOM UIDs, see ``imaging.pseudonym``).

Versioning: a reader's annotation is never edited in place.  A new version is a
new ``ReaderAnnotation`` row and the previous one is marked not current, so a
consensus run can record exactly which versions it read.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q


class Project(models.Model):
    """A labelling project: one taxonomy, one reading protocol, one model line."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    taxonomy_preset = models.CharField(max_length=32, blank=True)
    readers_per_image = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1)]
    )
    consensus_strategy = models.CharField(max_length=64, default="wbf")
    consensus_params = models.JSONField(default=dict, blank=True)
    #: Pre-labels bias an independent read, so readers see none unless enabled.
    show_prelabels = models.BooleanField(default=False)
    clahe = models.BooleanField(default=False)
    #: Accept images whose pixels may carry text: Burned In Annotation YES, or
    #: absent where text is common (annotations.imaging.burned_in).
    allow_burned_in_annotation = models.BooleanField(default=False)

    class AnatomyPolicy(models.TextChoices):
        ACCEPT = "accept"
        FLAG = "flag"
        QUARANTINE = "quarantine"

    #: What ingest does with a film whose header says it is not a frontal chest film
    #: (another body part, a lateral view): import it, import it with a note, or
    #: quarantine it with the reason.
    anatomy_policy = models.CharField(max_length=16, choices=AnatomyPolicy.choices,
                                      default=AnatomyPolicy.QUARANTINE)
    #: PS3.15 "Retain Patient Characteristics" option: keep age, sex, size,
    #: weight, ethnic group, smoking and pregnancy status (off: removed).
    deid_retain_patient_characteristics = models.BooleanField(default=False)
    display_long_side = models.PositiveIntegerField(null=True, blank=True)
    #: Images whose reader agreement (mean pairwise F1) falls below this go to an
    #: adjudicator; None turns adjudication off.
    adjudication_threshold = models.FloatField(null=True, blank=True, default=0.5)
    #: With a strategy that gives posteriors (``reader_model``): route the images most
    #: likely to be wrong, at most this many cases per 7 days, instead of the threshold.
    adjudication_budget_per_week = models.PositiveIntegerField(null=True, blank=True)
    #: Whether Label Studio's "Start training" (via the ML backend) may retrain.
    allow_label_studio_training = models.BooleanField(default=False)
    #: A new model version is promoted only if its gold-set mAP@0.4 beats the
    #: promoted one by at least this much.
    promotion_threshold = models.FloatField(default=0.0)
    #: Start retraining by itself after this many new final labels (None: never).
    auto_retrain_after = models.PositiveIntegerField(null=True, blank=True)
    #: Two-stage pre-labels: the promoted classifier's P(normal) gates the detector's
    #: boxes (``training.two_stage``); a film with P(normal) at or above the operating
    #: point is called normal and shows no box.
    two_stage = models.BooleanField(default=False)
    two_stage_threshold = models.FloatField(default=0.9)
    #: Also multiply every box score by P(abnormal) (off: only films called normal
    #: lose their boxes; ``bench.two_stage`` measures both).
    two_stage_rescale = models.BooleanField(default=False)
    #: Cardiothoracic ratio above which a film is flagged for cardiomegaly (PA films;
    #: measured from the heart and lung-field masks).
    ctr_threshold = models.FloatField(default=0.5)
    #: Pre-labels also carry where the classifier looked for each finding it calls
    #: (its Grad-CAM region, a brush overlay of its own control readers may ignore).
    explanation_prelabels = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class LabelClass(models.Model):
    """One class of a project's taxonomy; ``image_level`` classes have no boxes."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_classes")
    class_id = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    code = models.SlugField(max_length=100)
    color = models.CharField(max_length=9, default="#ff0000")
    image_level = models.BooleanField(default=False)

    class Meta:
        ordering = ["project", "class_id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "class_id"], name="uniq_class_id"),
            models.UniqueConstraint(fields=["project", "name"], name="uniq_class_name"),
            models.UniqueConstraint(fields=["project", "code"], name="uniq_class_code"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}:{self.name}"


class MaskClass(models.Model):
    """A structure readers paint as a mask: anatomy ("Left lung") or a finding's extent."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="mask_classes")
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    code = models.SlugField(max_length=100)
    color = models.CharField(max_length=9, default="#00c853")
    anatomy = models.BooleanField(default=False)

    class Meta:
        ordering = ["project", "index"]
        constraints = [
            models.UniqueConstraint(fields=["project", "index"], name="uniq_mask_index"),
            models.UniqueConstraint(fields=["project", "name"], name="uniq_mask_name"),
            models.UniqueConstraint(fields=["project", "code"], name="uniq_mask_code"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}:{self.name}"


class Study(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="studies")
    pseudo_id = models.CharField(max_length=64)
    patient_pseudo_id = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "pseudo_id"], name="uniq_study"),
        ]

    def __str__(self) -> str:
        return self.pseudo_id


class Image(models.Model):
    """One radiograph, de-identified, with its display derivative and thumbnail."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="images")
    #: Unique platform-wide: image files, the image API and the viewer find an
    #: image by this id alone (derived per project: ``pseudonym.image_pseudo_id``).
    pseudo_id = models.CharField(max_length=64, unique=True)
    #: Keyed hash of the source file's name stem: lets CSV imports that name
    #: images by file (VinBigData ``image_id``) find them without storing names.
    source_key = models.CharField(max_length=64, db_index=True, blank=True)
    pixel_hash = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    pixel_spacing_row = models.FloatField(null=True, blank=True)
    pixel_spacing_col = models.FloatField(null=True, blank=True)
    modality = models.CharField(max_length=16, blank=True)
    view_position = models.CharField(max_length=16, blank=True)
    photometric = models.CharField(max_length=16, blank=True)
    bits_stored = models.PositiveSmallIntegerField(null=True, blank=True)
    source_format = models.CharField(max_length=8, default="dicom")
    dicom_path = models.CharField(max_length=255, blank=True)
    display_path = models.CharField(max_length=255)
    display_width = models.PositiveIntegerField()
    display_height = models.PositiveIntegerField()
    thumbnail_path = models.CharField(max_length=255)
    #: Held out of training; every model version is evaluated on the gold images.
    is_gold = models.BooleanField(default=False, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "pixel_hash"], name="uniq_image_pixels"),
        ]

    def __str__(self) -> str:
        return self.pseudo_id


class Reader(models.Model):
    """A radiologist: a user plus a short reader code such as ``R9``."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reader"
    )
    code = models.CharField(max_length=32, unique=True)
    active = models.BooleanField(default=True)
    #: Adjudicators decide images the readers disagree on; they see every read of the
    #: cases they decide, in the projects listed in ``adjudicates`` only, and never a
    #: case of an image they read themselves.
    is_adjudicator = models.BooleanField(default=False)
    adjudicates = models.ManyToManyField(Project, blank=True, related_name="adjudicators")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class Assignment(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"
        SKIPPED = "skipped"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="assignments")
    reader = models.ForeignKey(Reader, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["image", "reader"], name="uniq_assignment"),
        ]

    def __str__(self) -> str:
        return f"{self.image_id}/{self.reader.code}"


class ReaderAnnotation(models.Model):
    """One version of one reader's read of one image."""

    class Source(models.TextChoices):
        LABEL_STUDIO = "label_studio"
        IMPORT = "import"
        API = "api"
        ADJUDICATION = "adjudication"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="annotations")
    reader = models.ForeignKey(Reader, on_delete=models.PROTECT, related_name="annotations")
    assignment = models.ForeignKey(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations"
    )
    source = models.CharField(max_length=16, choices=Source.choices)
    external_id = models.CharField(max_length=64, blank=True)
    version = models.PositiveIntegerField(default=1)
    is_current = models.BooleanField(default=True)
    image_labels = models.JSONField(default=list, blank=True)
    was_cancelled = models.BooleanField(default=False)
    #: Non-empty when the annotation must not count (e.g. protocol violation).
    excluded_reason = models.CharField(max_length=200, blank=True)
    external_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["image", "reader"], condition=Q(is_current=True),
                name="one_current_annotation",
            ),
            models.UniqueConstraint(
                fields=["image", "reader", "version"], name="uniq_annotation_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.image_id}/{self.reader_id} v{self.version}"


class AnnotationBox(models.Model):
    annotation = models.ForeignKey(
        ReaderAnnotation, on_delete=models.CASCADE, related_name="boxes"
    )
    label_class = models.ForeignKey(LabelClass, on_delete=models.PROTECT, related_name="+")
    x_min = models.FloatField()
    y_min = models.FloatField()
    x_max = models.FloatField()
    y_max = models.FloatField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(x_max__gt=models.F("x_min")) & Q(y_max__gt=models.F("y_min")),
                name="box_positive_area",
            ),
        ]


class AnnotationMask(models.Model):
    """One structure a reader painted, in original pixels, stored losslessly (a PNG in the
    platform's storage, named by its content's digest)."""

    annotation = models.ForeignKey(ReaderAnnotation, on_delete=models.CASCADE,
                                   related_name="masks")
    mask_class = models.ForeignKey(MaskClass, on_delete=models.PROTECT, related_name="+")
    path = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    area = models.PositiveIntegerField()

    class Meta:
        ordering = ["annotation", "mask_class"]
        constraints = [
            models.UniqueConstraint(fields=["annotation", "mask_class"],
                                    name="one_mask_per_class"),
        ]


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Run(models.Model):
    """What every background job has: one lifecycle, guarded by ``services.runs``.

    ``pending -> running -> done | failed | cancelled``; a finished run never goes
    back.  ``running`` may go back to ``pending`` only when its attempt ends with a
    transient error (a retry or the sweep takes it again).  ``attempts`` counts
    claims and is the fencing token of the current one: an attempt whose number is
    no longer the run's (the run was re-claimed after its heartbeat stopped) can
    neither heartbeat nor finish.  ``heartbeat_at`` is written by the running
    attempt (claim, progress); the periodic sweep (``runs_sweep``) acts on runs
    whose heartbeat stopped.  ``cancel_requested`` is read at each heartbeat by
    the kinds that honour it (training, pre-labelling).
    """

    KIND: str = ""
    Status = RunStatus

    status = models.CharField(max_length=16, choices=RunStatus.choices,
                              default=RunStatus.PENDING, db_index=True)
    reason = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class IngestBatch(Run):
    """Staged files, each processed by its own task (``IngestItem``): the batch is
    running from its creation until no item is pending (then done); its liveness
    is its items' progress (see ``services.runs``)."""

    KIND = "ingest"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="ingest_batches")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    source = models.CharField(max_length=32, default="command")
    status = models.CharField(max_length=16, choices=RunStatus.choices,
                              default=RunStatus.RUNNING, db_index=True)

    class Meta:
        ordering = ["-id"]


class IngestItem(models.Model):
    """One file of a batch and what became of it (imported, duplicate, quarantined)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        IMPORTED = "imported"
        DUPLICATE = "duplicate"
        QUARANTINED = "quarantined"
        FAILED = "failed"

    batch = models.ForeignKey(IngestBatch, on_delete=models.CASCADE, related_name="items")
    #: Position of the file in the batch; original names may carry identity
    #: and are never stored.
    seq = models.PositiveIntegerField()
    staged_path = models.CharField(max_length=255, blank=True)
    #: Keyed hash of the file's name stem (see ``Image.source_key``).
    source_key = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    reason = models.CharField(max_length=64, blank=True)
    detail = models.TextField(blank=True)
    quarantine_path = models.CharField(max_length=255, blank=True)
    #: When the original went to quarantine; it is deleted
    #: CXR_QUARANTINE_RETENTION_DAYS later (the row and its reason stay).
    quarantined_at = models.DateTimeField(null=True, blank=True)
    original_purged_at = models.DateTimeField(null=True, blank=True)
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL)
    attempts = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["batch", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "seq"], name="uniq_batch_seq"),
        ]


class AuditEvent(models.Model):
    """Who did what, when: append-only."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    action = models.CharField(max_length=64, db_index=True)
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]


class ConsensusRun(Run):
    """One application of a consensus strategy to a set of images.

    It records the exact annotation versions it read (``annotations``), so the
    same run can be re-executed and must give identical output (``digest``).
    """

    KIND = "consensus"

    class Trigger(models.TextChoices):
        MANUAL = "manual"
        READS_COMPLETE = "reads_complete"
        IMPORT = "import"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="consensus_runs")
    strategy = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    #: Pseudonymous ids of the images in scope; empty means every image with reads.
    image_scope = models.JSONField(default=list, blank=True)
    annotations = models.ManyToManyField(ReaderAnnotation, related_name="consensus_runs",
                                         blank=True)
    digest = models.CharField(max_length=64, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-id"]


class ReconcileRun(Run):
    """One pass over every Label Studio workspace, repairing what webhooks missed
    (``label_studio_sync.reconcile_all``): what it repaired and which workspaces failed,
    so an admin sees a workspace deleted behind the platform's back.  Not per project:
    one pass covers them all, one at a time (a pass asked for while one is active joins
    it)."""

    KIND = "reconcile"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        MANUAL = "manual"

    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    #: Counts over all workspaces (created, unchanged, withdrawn, violation, ...).
    stats = models.JSONField(default=dict, blank=True)
    #: One entry per workspace that could not be reconciled: workspace, project, reader, error.
    failed_workspaces = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-id"]


class ConsensusImage(models.Model):
    """The consensus of one image in one run (boxes in ``boxes``)."""

    run = models.ForeignKey(ConsensusRun, on_delete=models.CASCADE, related_name="images")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="consensus")
    image_labels = models.JSONField(default=list, blank=True)
    n_readers = models.PositiveSmallIntegerField(default=0)
    #: Mean pairwise F1 of the readers on this image (None with < 2 readers).
    agreement = models.FloatField(null=True, blank=True)
    meta = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "image"]
        constraints = [
            models.UniqueConstraint(fields=["run", "image"], name="uniq_consensus_image"),
        ]


class ConsensusBox(models.Model):
    consensus_image = models.ForeignKey(ConsensusImage, on_delete=models.CASCADE,
                                        related_name="boxes")
    label_class = models.ForeignKey(LabelClass, on_delete=models.PROTECT, related_name="+")
    x_min = models.FloatField()
    y_min = models.FloatField()
    x_max = models.FloatField()
    y_max = models.FloatField()
    score = models.FloatField()
    #: Reader codes whose boxes formed this box.
    support = models.JSONField(default=list)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["consensus_image", "position"]


class ConsensusMask(models.Model):
    """The merged mask of one structure on one image in one consensus run; ``meta`` holds
    the method's per-reader estimates and the readers' Dice agreement."""

    consensus_image = models.ForeignKey(ConsensusImage, on_delete=models.CASCADE,
                                        related_name="masks")
    mask_class = models.ForeignKey(MaskClass, on_delete=models.PROTECT, related_name="+")
    path = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    area = models.PositiveIntegerField()
    meta = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["consensus_image", "mask_class"]
        constraints = [
            models.UniqueConstraint(fields=["consensus_image", "mask_class"],
                                    name="one_consensus_mask_per_class"),
        ]


class Adjudication(models.Model):
    """An image the readers disagreed on, waiting for (or decided by) an adjudicator.

    The adjudicator's read (``decision``) overrides the consensus for that image
    and is kept as such: later consensus runs do not replace it.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        CANCELLED = "cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="adjudications")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="adjudications")
    consensus_run = models.ForeignKey(ConsensusRun, null=True, blank=True,
                                      on_delete=models.SET_NULL, related_name="+")
    agreement = models.FloatField(null=True, blank=True)
    #: Posterior probability that the consensus of the image is wrong (when routed by it).
    p_error = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING,
                              db_index=True)
    adjudicator = models.ForeignKey(Reader, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="adjudications")
    decision = models.ForeignKey(ReaderAnnotation, null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        #: Most likely wrong first (cases routed by posterior), then least agreed.
        ordering = [F("p_error").desc(nulls_last=True), "agreement", "id"]
        constraints = [
            models.UniqueConstraint(fields=["image"], condition=~Q(status="cancelled"),
                                    name="one_open_adjudication"),
        ]


class Workspace(models.Model):
    """One reader's own Label Studio project for one platform project.

    Label Studio's community edition shows every project, annotation, user and webhook of an
    organization to every member, so each workspace is its own organization (made by the
    bridge inside Label Studio): a service user owns it and is what the platform acts as
    (``service_token``, a secret never serialised nor logged), and one reader user is the
    only other member, signed in only through the platform.
    """

    class Kind(models.TextChoices):
        READING = "reading"
        ADJUDICATION = "adjudication"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="workspaces")
    reader = models.ForeignKey(Reader, on_delete=models.CASCADE, related_name="workspaces")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.READING)
    ls_project_id = models.PositiveIntegerField(unique=True)
    #: Null only on workspaces made before organizations per workspace: those are not
    #: blind (any reader could open them) and are refused until re-created.
    ls_organization_id = models.PositiveIntegerField(unique=True, null=True)
    #: The Label Studio user who reads here: the only ``completed_by`` that counts.
    ls_reader_user_id = models.PositiveIntegerField(unique=True, null=True)
    ls_service_user_id = models.PositiveIntegerField(unique=True, null=True)
    service_token = models.CharField(max_length=128, blank=True)
    #: Reconcile's high-water mark: the latest task ``updated_at`` (Label Studio's clock,
    #: its own format) the last pass saw; the next looks only at tasks changed since.
    ls_reconciled_through = models.CharField(max_length=40, blank=True)
    #: When the last full pass (every task, whatever its time) ran.
    reconciled_full_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __repr__(self) -> str:  # keep the token out of tracebacks
        return f"<Workspace {self.pk} ls_project={self.ls_project_id}>"

    class Meta:
        ordering = ["project", "reader"]
        constraints = [
            models.UniqueConstraint(fields=["project", "reader", "kind"], name="uniq_workspace"),
        ]


class WorkspaceTask(models.Model):
    """An image placed in a workspace as a Label Studio task."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="tasks")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="workspace_tasks")
    ls_task_id = models.PositiveIntegerField(unique=True)
    adjudication = models.ForeignKey("Adjudication", null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="tasks")
    #: The model pre-label shown to the reader with this task, if any.
    prediction = models.ForeignKey("Prediction", null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="tasks")
    #: The mask model's prediction shown with it (another version's row), if any.
    mask_prediction = models.ForeignKey("Prediction", null=True, blank=True,
                                        on_delete=models.SET_NULL, related_name="mask_tasks")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "image"], name="uniq_workspace_image"),
        ]


class WebhookEvent(models.Model):
    """A Label Studio webhook as received (stored before it is processed)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSED = "processed"
        IGNORED = "ignored"
        REJECTED = "rejected"

    digest = models.CharField(max_length=64, unique=True)
    #: The workspace whose URL and secret the event came with (null: refused at the door).
    workspace = models.ForeignKey(Workspace, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="webhook_events")
    action = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING,
                              db_index=True)
    reason = models.TextField(blank=True)
    #: Times the sweep re-queued it: an event that keeps failing is rejected, not retried
    #: forever.
    attempts = models.PositiveSmallIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]


class ProtocolViolation(models.Model):
    """A change in a workspace that does not count, kept for the admin.

    ``foreign_annotator``: an annotation made by someone other than the workspace's reader.
    ``after_unblinding``: the reader changed (or deleted) their read after blinding ended
    for them (the image was final, so they could see other readers' boxes); their frozen
    read stays what consensus, agreement and training use.
    """

    class Kind(models.TextChoices):
        FOREIGN_ANNOTATOR = "foreign_annotator"
        AFTER_UNBLINDING = "after_unblinding"

    kind = models.CharField(max_length=24, choices=Kind.choices,
                            default=Kind.FOREIGN_ANNOTATOR)
    #: Digest of the offending content, so one edit is recorded once however often seen.
    content_digest = models.CharField(max_length=64, blank=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="violations")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="violations")
    ls_annotation_id = models.PositiveIntegerField()
    ls_user_id = models.PositiveIntegerField(null=True, blank=True)
    actual_reader = models.ForeignKey(Reader, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    detail = models.JSONField(default=dict, blank=True)
    detected_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["ls_annotation_id", "kind", "content_digest"],
                                    name="uniq_violation"),
        ]


class Prediction(models.Model):
    """A model's boxes for one image (pre-labels; AL scores build on them).

    ``boxes``: ``[{"label": name, "box": [x_min, y_min, x_max, y_max], "score": s}]``
    in original pixels.
    """

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.CharField(max_length=64)
    #: Each box may carry ``probs``: the full per-class probability vector.
    boxes = models.JSONField(default=list)
    score = models.FloatField(null=True, blank=True)
    #: Image-level uncertainty scores (``training.uncertainty``) for active learning.
    uncertainty = models.JSONField(default=dict, blank=True)
    #: Test-time-augmentation disagreement in [0, 1] (when scored for AL).
    tta = models.FloatField(null=True, blank=True)
    #: Pooled, L2-normalised backbone features (when scored for AL diversity).
    features = models.JSONField(null=True, blank=True)
    #: The promoted classifier's view of the film, when there is one: ``{"classifier",
    #: "probs": {class: p}, "p_normal", "gated"}``, plus ``"called_normal"``,
    #: ``"threshold"`` and ``"rescaled"`` when the two-stage gate applied.
    image_scores = models.JSONField(default=dict, blank=True)
    #: A mask model's prediction (rows of a segmenter version): ``{"segmenter": name,
    #: "classes": {class: {"path", "sha256", "area"}}}``, masks at the display size.
    masks = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"],
                                    name="one_prediction_per_version"),
        ]


class PredictionFeedback(models.Model):
    """How one reader treated one predicted box (or a box the model missed)."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"
        ADJUSTED = "adjusted"
        REJECTED = "rejected"
        MISSED = "missed"

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE,
                                   related_name="feedback")
    annotation = models.ForeignKey(ReaderAnnotation, on_delete=models.CASCADE,
                                   related_name="prediction_feedback")
    reader = models.ForeignKey(Reader, on_delete=models.CASCADE, related_name="+")
    model_version = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    #: Class of the predicted box (missed: of the reader's box).
    label_class = models.ForeignKey(LabelClass, on_delete=models.CASCADE, related_name="+")
    iou = models.FloatField()
    predicted_index = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)


class MaskFeedback(models.Model):
    """How much one reader changed one pre-painted mask: Dice between the model's mask
    and the reader's final mask of that class (1.0: accepted as painted; a class the
    reader removed or the model missed: 0.0)."""

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE,
                                   related_name="mask_feedback")
    annotation = models.ForeignKey(ReaderAnnotation, on_delete=models.CASCADE,
                                   related_name="+")
    reader = models.ForeignKey(Reader, on_delete=models.CASCADE, related_name="+")
    model_version = models.CharField(max_length=64, db_index=True)
    mask_class = models.ForeignKey(MaskClass, on_delete=models.CASCADE, related_name="+")
    dice = models.FloatField()
    predicted_area = models.PositiveIntegerField()
    read_area = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)


class PredictionRating(models.Model):
    """A radiologist's explicit verdict on a prediction (shown to admins)."""

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="ratings")
    reader = models.ForeignKey(Reader, on_delete=models.CASCADE, related_name="+")
    useful = models.BooleanField()
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prediction", "reader"], name="one_rating_each"),
        ]


class TrainingRequest(models.Model):
    """A request to retrain a project's model (from an admin or from Label Studio).

    Training runs pick pending requests up; a request from Label Studio is only
    accepted for projects that allow it.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        STARTED = "started"
        REFUSED = "refused"

    project = models.ForeignKey(Project, on_delete=models.CASCADE,
                                related_name="training_requests")
    source = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)


class PrelabelRun(Run):
    """A batch pre-labelling pass of one model version over a project's images."""

    KIND = "prelabel"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prelabel_runs")
    model_version = models.CharField(max_length=64)
    image_scope = models.JSONField(default=list, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    pushed = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-id"]


class TrainingRun(Run):
    """One training of a project's detector on its final labels."""

    KIND = "training"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    params = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    model_version = models.ForeignKey("ModelVersion", null=True, blank=True,
                                      on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-id"]
        constraints = [
            # one training per project at a time, enforced by the database
            models.UniqueConstraint(fields=["project"], name="one_active_training",
                                    condition=Q(status__in=["pending", "running"])),
        ]


class ModelVersion(models.Model):
    """A trained model: checkpoint (with checksum), config, exact training set,
    parent, gold-set metrics, and who promoted it.  A project has one promoted version
    per kind: its detector (boxes) and its image-level classifier."""

    class Kind(models.TextChoices):
        DETECTOR = "detector"
        CLASSIFIER = "classifier"
        SEGMENTER = "segmenter"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.DETECTOR)
    name = models.CharField(max_length=64, unique=True)
    sha256 = models.CharField(max_length=64)
    config = models.TextField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="children")
    training_run = models.ForeignKey(TrainingRun, null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="+")
    #: Pseudonymous ids of the images trained on, and where their labels came from.
    train_images = models.JSONField(default=list)
    label_sources = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    promoted = models.BooleanField(default=False)
    promoted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    promoted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]


class ActiveLearningRound(Run):
    """One round: score the pool with the promoted model, select B images, assign
    them to k readers; reads, consensus and retraining follow.  A run on the gpu queue
    (scoring is inference); ``number`` is given when the round assigns, so failed or
    cancelled rounds leave no gap in the learning curve."""

    KIND = "al_round"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="al_rounds")
    number = models.PositiveIntegerField(null=True, blank=True)
    seed = models.IntegerField(default=0)
    strategy = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    budget = models.PositiveIntegerField()
    model_version = models.ForeignKey(ModelVersion, null=True, on_delete=models.SET_NULL,
                                      related_name="+")
    selected = models.JSONField(default=list)
    scores = models.JSONField(default=dict, blank=True)
    labeled_before = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["project", "number", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="uniq_al_round"),
        ]


class ServiceToken(models.Model):
    """A service's API credential (e.g. the ML backend's): only its SHA-256 is stored.

    The service is the user's group (``ml-backend``); the user is not staff and
    has no usable password.  The key is high-entropy and random, so one SHA-256
    suffices (no slow hash); it expires, and rotating it deletes the old one.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="service_tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    def __repr__(self) -> str:  # keep the hash out of tracebacks
        return f"<ServiceToken {self.pk} user={self.user_id}>"

    class Meta:
        ordering = ["-id"]
