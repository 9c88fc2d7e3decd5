import hashlib

from django.conf import settings
from django.db import models
from django.urls import reverse


class Project(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=120)
    created_at = models.DateTimeField(auto_now_add=True)
    # "Images must not be mirrored" (no flip augmentation, no flip test-time averaging).
    # None: not chosen by the user, which means on when the project holds DICOM images.
    no_mirroring = models.BooleanField(null=True, blank=True, default=None)

    class GroupBy(models.TextChoices):
        NONE = "", "Nothing (near-identical images are still kept together)"
        FOLDER = "folder", "A folder of the import path (e.g. one folder per patient or slide)"
        FILENAME = "filename", "The start of the file name, up to the first “_”"
        FILENAME_NUMBER = "filename_number", "The first number in the file name (a patient or subject number)"
        PATIENT = "patient", "The DICOM patient"

    # What ties images together (one patient's follow-up scans): every split keeps a group on one side.
    group_by = models.CharField(max_length=16, choices=GroupBy.choices, blank=True, default="")
    # For group_by="folder": 1 = the folder the file is in, 2 = the folder above it, ...
    group_folder_level = models.PositiveSmallIntegerField(default=1)
    # The classes are grades (KL0 < KL2 < KL3 < KL4, tumour stages, defect severity): results then add
    # how many grades off the answers are. class_order lists them lowest first; a class it does not
    # name (or all of them, when it is empty) follows in the natural order of the names.
    ordered_classes = models.BooleanField(default=False)
    class_order = models.JSONField(default=list, blank=True)
    # The version the owner published as "the project's model": what the predict page, the API and
    # the export use unless told otherwise. None: the latest succeeded version.
    published_run = models.ForeignKey("TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The last version number given: a deleted version's number is never given again, so an API
    # client naming v3 can never silently get another model.
    last_version = models.PositiveIntegerField(default=0)
    # The owner's own words on what the model is for and where it must not be trusted: the
    # "intended use and limitations" section of every training report (the model-card habit).
    intended_use = models.TextField(blank=True, default="")
    # Who the training report's citation names, and where they work: the people behind the study,
    # which the account name ("alice", "lab-pc-3") is not. Blank: the account's full name, else its username.
    report_authors = models.CharField(max_length=300, blank=True, default="")
    report_affiliation = models.CharField(max_length=300, blank=True, default="")
    # Monitoring (#25): whether a logged prediction keeps its image (small JPEG) for review, for
    # PREDICTION_IMAGES_KEPT_DAYS; the log rows themselves are kept longer (PREDICTION_LOG_KEPT_DAYS).
    keep_prediction_images = models.BooleanField(default=True)
    # The share of predictions drawn at random into the audit sample at the moment they are logged,
    # so live accuracy is estimated from a sample that nothing about the image chose.
    audit_percent = models.PositiveSmallIntegerField(default=10)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("project_detail", args=[self.pk])


class Label(models.Model):
    """One class of the classifier ("class" is a Python keyword, hence the name)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=80)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_label_name_per_project")]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("label_detail", args=[self.project_id, self.pk])


def image_upload_path(instance, filename):
    # Content-hash names: the same bytes are stored once per project.
    suffix = filename.rsplit(".", 1)[-1].lower()
    return f"projects/{instance.project_id}/images/{instance.sha256}.{suffix}"


def thumbnail_upload_path(instance, filename):
    return f"projects/{instance.project_id}/thumbs/{instance.sha256}.jpg"


class LiveImageManager(models.Manager):
    """Labelled images not in the trash. As the first manager it is also the default one, so every
    list, count, related manager (project.images, label.images) and training snapshot leaves deleted
    images and the Inbox out; joins (Count("images")) must filter on images__deleted_at (and
    images__label) themselves: library.selectors.LIVE_IMAGES."""

    def get_queryset(self):
        return super().get_queryset().filter(deleted_at__isnull=True, label__isnull=False)


class InboxManager(models.Manager):
    """The Inbox (#24): a project's unlabelled images not in the trash."""

    def get_queryset(self):
        return super().get_queryset().filter(deleted_at__isnull=True, label__isnull=True)


class Image(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    # None: the image is in the project's Inbox (#24), unlabelled; Image.inbox lists those.
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="images", null=True, blank=True)
    file = models.FileField(upload_to=image_upload_path, max_length=255)
    thumbnail = models.FileField(upload_to=thumbnail_upload_path, max_length=255, blank=True)
    sha256 = models.CharField(max_length=64)
    original_name = models.CharField(max_length=255)
    # "train" / "val" when an imported archive said so; "" lets each run split by itself.
    # "test" (an imported test/ folder, or set aside on the class page) is held out of every run:
    # never trained on nor chosen with, only scored by the final model.
    split = models.CharField(max_length=8, blank=True, default="")
    # The user looked at this image when it was suspected of a wrong label and said it is right:
    # it is not listed as a suspect again.
    label_confirmed = models.BooleanField(default=False)
    # Perceptual (difference) hash, to find resized or recompressed copies: see duplicates.py.
    dhash = models.CharField(max_length=16, blank=True, default="")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    # Bytes of the stored file: what counts against the owner's storage quota.
    size_bytes = models.PositiveBigIntegerField(default=0)
    # One channel (X-ray, fluorescence): the project page then offers "images must not be mirrored".
    grayscale = models.BooleanField(default=False)
    # A keyed hash (HMAC with SECRET_KEY and the project) of the DICOM PatientID, never the ID itself:
    # enough to keep one patient's images on one side of a split.
    patient_key = models.CharField(max_length=64, blank=True, default="")
    # Where an image came from when not from an upload: "from production, reviewed by alice on
    # 2026-12-07" for a reviewed prediction added to its class (#25). Blank: uploaded or imported.
    provenance = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when the user deletes the image: it can be undone until the row and its files are
    # purged (library.trash.deleted_images_purge, after DELETED_IMAGES_KEPT_MINUTES).
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Inbox (#24): "unsure" ("x" on the labelling page) keeps it in the Inbox, flagged and asked last.
    inbox_unsure = models.BooleanField(default=False)
    # When and by whom an Inbox image was given its label (blank for images uploaded labelled): the
    # labelling page's "labelled so far", and the random picks' honest estimate.
    labelled_at = models.DateTimeField(null=True, blank=True)
    labelled_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    # What the Inbox's quick model suggested when this image was labelled from it, and why it was
    # asked ("unsure", "cold", "random"): random picks' suggestions against the labels given are the
    # honest estimate of the quick model's accuracy (engine.active.honest_estimate).
    suggested_label = models.CharField(max_length=80, blank=True, default="")
    asked_as = models.CharField(max_length=8, blank=True, default="")

    objects = LiveImageManager()
    inbox = InboxManager()
    all_objects = models.Manager()  # the trash and the Inbox included: restore, purge and file bookkeeping

    class Meta:
        ordering = ["-created_at", "-pk"]
        base_manager_name = "all_objects"  # cascades and forward relations see trashed rows too
        constraints = [models.UniqueConstraint(fields=["project", "sha256"], name="unique_image_content_per_project")]

    def __str__(self):
        return self.original_name


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    base_model = models.CharField(max_length=64)
    preset = models.CharField(max_length=16, default="best")
    config = models.JSONField(default=dict)
    classes = models.JSONField(default=list)
    n_images = models.PositiveIntegerField(default=0)
    job_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Which try this is: a run lost with its worker is queued again as the next one (JOB_ATTEMPTS),
    # and a worker writes only while the row is still at its own try (a silent one cannot interfere).
    attempt = models.PositiveSmallIntegerField(default=1)
    cancel_requested = models.BooleanField(default=False)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=32, blank=True)
    epoch = models.PositiveIntegerField(default=0)
    total_epochs = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=255, blank=True)
    # The engine's priced estimate of the work left, as of heartbeat_at (None: not priced yet).
    seconds_left = models.FloatField(null=True, blank=True)
    history = models.JSONField(default=list)
    metrics = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    artifact_dir = models.CharField(max_length=500, blank=True)
    # Risk level of the prediction sets: answers miss the true class at most this often on average.
    alpha = models.FloatField(default=0.1)
    # Two classes only: the class that counts as "positive" and the score from which predictions
    # call it (chosen on the results page from the sensitivity/specificity trade-off).
    positive_class = models.CharField(max_length=80, blank=True)
    decision_threshold = models.FloatField(null=True, blank=True)
    # v1, v2, ... per project: given when the run succeeds (jobs.progress.finish), from Project.last_version.
    version = models.PositiveIntegerField(null=True, blank=True)
    # Where it ran, written when a worker claims it: the rq worker's name and the device, e.g.
    # "cuda: NVIDIA H100 80GB HBM3" or "cpu: 2 threads" (engine.features.describe_device).
    worker_name = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="unique_version_per_project")]

    def __str__(self):
        return f"Run {self.pk} of {self.project}"

    def get_absolute_url(self):
        return reverse("run_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def accuracy(self):
        return self.metrics.get("accuracy")

    @property
    def strategy_words(self) -> str:
        """The versions table's strategy, in the runs table's words: "Fast" or "Best", and which model
        was kept ("Best: fine-tuned model kept, retrained on all images"); the engine's own
        description (metrics["strategy"]) is for the report."""
        metrics = self.metrics or {}
        stage = metrics.get("chosen_stage")
        kept = {"head": "quick model", "finetune": "fine-tuned model",
                "ensemble": "average of both models"}.get(stage)
        words = [f"{kept} kept"] if kept and self.preset == "best" else []
        if (metrics.get("refit") or {}).get("done"):
            words.append("its quick half retrained on all images" if stage == "ensemble" else "retrained on all images")
        preset = (self.preset or "").capitalize()
        return f"{preset}: {', '.join(words)}" if words else preset

    @property
    def accuracy_evidence(self) -> dict | None:
        """The headline accuracy with the images it counts: {"k", "n", "set"} ("146/153 validation"),
        so no figure is shown without its image set and n. k is None for runs from before it was kept."""
        metrics = self.metrics or {}
        if metrics.get("accuracy") is None or not metrics.get("n_scored"):
            return None
        return {"k": metrics.get("n_correct"), "n": metrics["n_scored"], "set": self.scored_images}

    @property
    def scored_images(self) -> str:
        """Which images the run's figures come from, in the page's words: "test", "validation", or
        "out-of-fold" (a small project: every image trained, each scored by a model that left it out)."""
        return {"test": "test", "out_of_fold": "out-of-fold"}.get((self.metrics or {}).get("evaluated_on"), "validation")

    @property
    def percent(self) -> int:
        return round(100 * min(max(self.progress, 0.0), 1.0))

    @property
    def stage_label(self) -> str:
        """The engine's phase names, in the user's words."""
        return {"features": "Reading images", "head": "Quick model", "finetune": "Fine-tuning",
                "refit": "Retraining on all images"}.get(self.stage, self.stage)

    @property
    def model_choice_label(self) -> str:
        """How the predict page's model picker names this run's model."""
        if self.status == self.Status.SUCCEEDED:
            version = f"v{self.version} · " if self.version else ""
            return f"{version}Run #{self.pk} · {self.base_model} · {round(100 * (self.accuracy or 0))}% accuracy"
        why = {self.Status.QUEUED: "waiting to run again", self.Status.RUNNING: "still training", self.Status.CANCELLED: "run cancelled",
               self.Status.FAILED: "run failed"}.get(self.status, self.status)
        accuracy = (self.metrics or {}).get("first_model_accuracy")  # None: a small project's (no validation)
        shown = f" · {round(100 * accuracy)}% accuracy" if accuracy is not None else ""
        return f"Run #{self.pk} · {self.base_model} · quick first model ({why}){shown}"


class WorkerJob(models.Model):
    """What a row run by a worker job records (imports, batch predictions): the row is the truth
    about the work, the rq job (job_id) only plumbing; the reaper watches heartbeat_at."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    job_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)  # as TrainingRun.attempt
    total = models.PositiveIntegerField(default=0)
    # While it is unfinished: e.g. paused by the per-user allowance, or run again after its worker died.
    message = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)


class ImportJob(WorkerJob):
    """A zip (or folder) import, done in the background with a per-file report."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    source_name = models.CharField(max_length=255)
    upload_path = models.CharField(max_length=500, blank=True)
    processed = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    # Harmless repeats (the same file already in this class); before migration 0014 refused files too.
    skipped = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)  # not an image, too many pixels, a copy in another class, ...
    # Imported images per folder of a recognised train/ val/ test/ layout: {"train": 120, "val": 40}.
    split_counts = models.JSONField(default=dict, blank=True)
    junk = models.PositiveIntegerField(default=0)
    into_inbox = models.BooleanField(default=False)  # "everything into the Inbox" (#24): class folders ignored
    inbox = models.PositiveIntegerField(default=0)  # images the import put into the Inbox (no class)
    missing_rows = models.PositiveIntegerField(default=0)  # rows of the labels file naming no file of the import
    labels_file = models.CharField(max_length=500, blank=True)  # the labels file found (used unless into_inbox)

    def get_absolute_url(self):
        return reverse("import_detail", args=[self.pk])

    @property
    def percent(self) -> int:
        return round(100 * self.processed / self.total) if self.total else 0


class ImportReportRow(models.Model):
    """One file of an import and what became of it: appended as the import goes, never rewritten."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="report_rows")
    name = models.CharField(max_length=500)
    label = models.CharField(max_length=255, blank=True)
    ok = models.BooleanField()
    skipped = models.BooleanField(default=False)  # not imported but harmless: already in this class
    reason = models.TextField(blank=True)
    inbox = models.BooleanField(default=False)  # imported into the Inbox (no class)
    missing = models.BooleanField(default=False)  # not a file: a labels-file row naming no file of the import

    class Meta:
        ordering = ["pk"]


class UserQuota(models.Model):
    """One user's limits, where they differ from the server's defaults (QUOTA_* settings).

    An empty field means "the default"; 0 means "no limit". See quotas.py.
    """

    HELP = "Empty: the server's default. 0: no limit."

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    storage_mb = models.PositiveIntegerField("storage (MB)", null=True, blank=True, help_text=HELP)
    max_images = models.PositiveIntegerField("images", null=True, blank=True, help_text=HELP)
    max_projects = models.PositiveIntegerField("projects", null=True, blank=True, help_text=HELP)
    max_runs = models.PositiveIntegerField("trainings at once", null=True, blank=True, help_text=HELP)
    max_imports = models.PositiveIntegerField("imports at once", null=True, blank=True, help_text=HELP)

    def __str__(self):
        return f"Quota of {self.user}"


class BearerSecret(models.Model):
    """What a project key and a personal token share: only a SHA-256 of the secret is stored
    (secrets are long random strings, so a fast hash is safe, and a slow password hasher would add
    ~100 ms to every request); `prefix` (its first characters, shown on the page) finds the row."""

    PREFIX_LENGTH = 12

    name = models.CharField(max_length=80, blank=True)
    prefix = models.CharField(max_length=PREFIX_LENGTH, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def hash_of(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(BearerSecret):
    """A key for the REST API that opens one project."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    # Who made it (#26): an editor's keys are revoked when they lose the editor role. Null for keys
    # made before this was recorded (the owner's then) and for a creator whose account was deleted.
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="created_api_keys")

    class Meta(BearerSecret.Meta):
        pass

    def __str__(self):
        return f"{self.prefix}… ({self.project})"


class BatchPrediction(WorkerJob):
    """A large batch prediction (many images or a zip) run by the worker, with a CSV as its result.

    Its folder holds the uploaded inputs until the job ends, then the CSV and small thumbnails
    until BATCH_KEPT_DAYS have passed. `total` counts the CSV's rows: images and unreadable files.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="batches")
    # The model used; a batch's CSV stays readable after its version is deleted.
    run = models.ForeignKey(TrainingRun, on_delete=models.SET_NULL, null=True, related_name="batches")
    version = models.PositiveIntegerField(null=True)
    source_name = models.CharField(max_length=255)  # "shots.zip", or "120 files"
    # MEDIA_ROOT/batches/<random>, or in bucket mode the prefix batches/<random> (blobs.folder_record):
    # INPUTS/ (the uploads and their MANIFEST) until the job ends, then THUMBS/ and CSV.
    folder = models.CharField(max_length=500)
    csv_path = models.CharField(max_length=500, blank=True)  # set once the CSV is complete: folder/CSV

    INPUTS, MANIFEST, THUMBS, CSV = "inputs", "manifest.json", "thumbs", "predictions.csv"
    done = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)  # rows with an error instead of a prediction
    # Images counted against the owner's prediction allowance, by all tries: a try run again counts
    # only those past it (jobs.progress.BatchReporter).
    counted = models.PositiveIntegerField(default=0)

    def get_absolute_url(self):
        return reverse("batch_detail", args=[self.pk])

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


def prediction_image_path(instance, filename):
    return f"projects/{instance.project_id}/predictions/{instance.created_at:%Y%m%d}/{instance.sha256}.jpg"


class Prediction(models.Model):
    """One logged prediction of a published model's working life (#25): from the predict page, an
    API key or a batch. The row is the record (kept PREDICTION_LOG_KEPT_DAYS); the image, a small
    JPEG kept for review when the project keeps them, is dropped after PREDICTION_IMAGES_KEPT_DAYS."""

    class Source(models.TextChoices):
        PAGE = "page", "Predict page"
        API = "api", "API"
        BATCH = "batch", "Batch"

    class ReviewSource(models.TextChoices):
        QUEUE = "queue", "Review queue"
        API = "api", "Feedback API"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="predictions")
    # The version that answered; a deleted version leaves its log rows (with their version number).
    run = models.ForeignKey(TrainingRun, on_delete=models.SET_NULL, null=True, related_name="predictions")
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField(db_index=True)
    source = models.CharField(max_length=8, choices=Source.choices)
    source_name = models.CharField(max_length=120, blank=True, default="")  # the API key's name, the batch's file
    file_name = models.CharField(max_length=255, blank=True, default="")
    sha256 = models.CharField(max_length=64)
    top_label = models.CharField(max_length=80)
    probability = models.FloatField()
    prediction_set = models.JSONField(default=list)
    abstained = models.BooleanField(default=False)  # "don't know"
    unfamiliar = models.BooleanField(default=False)
    novelty = models.FloatField(null=True)
    seen_in_training = models.BooleanField(default=False)
    # The model's normalised head input (float16 bytes): what drift compares with the training images'.
    features = models.BinaryField(null=True)
    image = models.FileField(upload_to=prediction_image_path, max_length=255, blank=True)
    # Drawn into the random audit sample when logged (Project.audit_percent): live accuracy counts these only.
    audit = models.BooleanField(default=False)
    # The true class, from the review queue or the feedback API.
    review_label = models.CharField(max_length=80, blank=True, default="")
    review_source = models.CharField(max_length=8, choices=ReviewSource.choices, blank=True, default="")
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # The training image a reviewed prediction became ("add to its class").
    added_image = models.ForeignKey(Image, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["project", "created_at"], name="prediction_project_time"),
                   models.Index(fields=["project", "reviewed_at"], name="prediction_project_review")]

    def __str__(self):
        return f"{self.top_label} ({self.file_name or self.sha256[:8]})"

    @property
    def correct(self) -> bool | None:
        return None if not self.review_label else self.review_label == self.top_label


class Webhook(models.Model):
    """A URL that receives a project's events, signed per the Standard Webhooks spec (#25).
    The secret ("whsec_<base64>") signs every delivery; the page shows it once, at creation."""

    EVENTS = ["training.finished", "training.failed", "version.published", "drift.detected", "review.needed"]

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    events = models.JSONField(default=list)  # a subset of EVENTS
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return self.url


class WebhookDelivery(models.Model):
    """One event sent (or being sent) to one webhook, with its tries: the delivery log."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    message_id = models.CharField(max_length=40, unique=True)  # the webhook-id header: receivers dedupe on it
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When the worker may send its next try (pending only): a retry's backoff, or a lease while one is sent.
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]


class InboxRanking(models.Model):
    """The Inbox in "label these next" order (#24), from the quick model (a head on cached features)
    trained on the labels there were at `labels_at`; recomputed in the worker every few labels."""

    class Status(models.TextChoices):
        IDLE = "idle"
        QUEUED = "queued"
        RUNNING = "running"
        FAILED = "failed"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="inbox_ranking")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.IDLE)
    error = models.CharField(max_length=300, blank=True, default="")
    computed_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)  # how long the last retrain and ranking took
    labels_at = models.PositiveIntegerField(default=0)  # labelled images the quick model was trained on
    # Inbox image ids in asking order (unsure-flagged ones last).
    order = models.JSONField(default=list)
    # {str(image_id): {"label": suggested class or "", "probability": float, "kind": "unsure"|"cold"|"random",
    #  "reason": "unsure between A and B"}}
    cards = models.JSONField(default=dict)
    # The quick model's accuracy estimated from the random picks: {"accuracy", "low", "high", "n"}; {} too few.
    estimate = models.JSONField(default=dict)
    # One engine.active.Snapshot per retrain, as dicts, for has_plateaued; and its verdict.
    history = models.JSONField(default=list)
    plateau = models.BooleanField(default=False)
    plateau_reason = models.CharField(max_length=300, blank=True, default="")


class ProjectMap(models.Model):
    """A 2-D layout of every image's cached features (#24 item 7), computed in the worker."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        READY = "ready"
        FAILED = "failed"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="map")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    error = models.CharField(max_length=300, blank=True, default="")
    computed_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    n_points = models.PositiveIntegerField(default=0)
    # A digest of the images (ids, labels, splits) the layout was computed for: stale when it differs.
    images_digest = models.CharField(max_length=64, blank=True, default="")
    # The layout in the media storage: {"ids": [...], "xy": [[x, y], ...]} (JSON).
    points_file = models.CharField(max_length=255, blank=True, default="")


# --- teams (#26) --------------------------------------------------------------------------------

class Role(models.TextChoices):
    """What a user may do in a project, each role everything the one before may, and more
    (accounts/roles.py is the one place that compares them)."""
    VIEWER = "viewer", "Viewer: sees everything, predicts"
    LABELLER = "labeller", "Labeller: also uploads, labels, reviews"
    EDITOR = "editor", "Editor: also trains, publishes, exports, manages keys and webhooks"
    OWNER = "owner", "Owner: also shares and deletes"


class Membership(models.Model):
    """A user other than the owner with a role in a project (the owner has no row: project.owner)."""
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=[c for c in Role.choices if c[0] != Role.OWNER])
    added_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]


class PersonalToken(BearerSecret):
    """A user's own API token (#26): acts as its user, with that user's role in each project."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="personal_tokens")

    class Meta(BearerSecret.Meta):
        pass


class ReadingStudy(models.Model):
    """Blind double reading (#26): every reader labels every image of the study without seeing the
    image's label, the model's answer or the other readers' answers, until the study is closed."""

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="studies")
    name = models.CharField(max_length=120)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    closed_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=40, blank=True, default="")  # "test", "validation", "class:<name>", "selection"
    readers = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="reading_studies")
    # The class names a reader may choose, fixed when the study starts (a class renamed later keeps its reads).
    classes = models.JSONField(default=list)
    # The model version whose answers the agreement page compares with the readers (None: none yet).
    model_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN


class StudyImage(models.Model):
    """One image of a study, with the label it had when the study started (never shown to a reader
    while it is open), the model's answer, and the adjudicated label once an adjudicator picked one."""
    study = models.ForeignKey(ReadingStudy, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey("Image", on_delete=models.CASCADE, related_name="study_items")
    position = models.PositiveIntegerField()  # the order readers are asked in (the same for every reader)
    label_at_start = models.CharField(max_length=80, blank=True, default="")
    model_label = models.CharField(max_length=80, blank=True, default="")
    adjudicated_label = models.CharField(max_length=80, blank=True, default="")
    adjudicated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    adjudicated_at = models.DateTimeField(null=True, blank=True)
    written_back_at = models.DateTimeField(null=True, blank=True)  # the adjudicated label was written into the project

    class Meta:
        ordering = ["position", "pk"]
        constraints = [models.UniqueConstraint(fields=["study", "image"], name="one_item_per_image")]


class StudyRead(models.Model):
    """One reader's label for one image of a study (changeable while the study is open)."""
    item = models.ForeignKey(StudyImage, on_delete=models.CASCADE, related_name="reads")
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    label = models.CharField(max_length=80)
    read_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["item", "reader"]
        constraints = [models.UniqueConstraint(fields=["item", "reader"], name="one_read_per_reader")]


class AuditEntry(models.Model):
    """One line of the append-only audit trail (#26). Each entry's `entry_hash` covers its own fields
    and the hash before it (a hash chain over the whole table in id order), so a row changed or
    deleted in the database is found by `manage.py verify_audit_log`. The project is kept as a
    plain id and name, not a foreign key: deleting a project must not delete its history."""
    created_at = models.DateTimeField()
    project_ref = models.BigIntegerField(null=True, blank=True, db_index=True)
    project_name = models.CharField(max_length=120, blank=True, default="")
    actor = models.CharField(max_length=160)  # "alice", "alice (token ta_pt_ab12…)", "key ta_ab12… (Lab PC)", "worker"
    actor_ref = models.BigIntegerField(null=True, blank=True)  # the user's id when a user acted
    action = models.CharField(max_length=40, db_index=True)  # "label.changed", "image.uploaded", "run.started", ...
    detail = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["pk"]


class AuditHead(models.Model):
    """The chain's last hash, one row, locked while an entry is appended so two writers cannot both
    chain onto the same entry."""
    last_hash = models.CharField(max_length=64)
    count = models.BigIntegerField(default=0)


class OIDCIdentity(models.Model):
    """A user's account at the single sign-on provider (#26): the provider's issuer and its `sub`
    claim, the one identifier OpenID Connect promises never to reuse or change. A returning user is
    found by it, never by e-mail (an address can change hands, or be unverified at the provider)."""
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="one_user_per_oidc_subject")]
