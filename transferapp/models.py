from django.conf import settings
from django.db import models
from django.urls import reverse


class Project(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=120)
    created_at = models.DateTimeField(auto_now_add=True)

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


class Image(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="images")
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
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
    cancel_requested = models.BooleanField(default=False)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=32, blank=True)
    epoch = models.PositiveIntegerField(default=0)
    total_epochs = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=255, blank=True)
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

    class Meta:
        ordering = ["-created_at", "-pk"]

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
    def percent(self) -> int:
        return round(100 * min(max(self.progress, 0.0), 1.0))

    @property
    def stage_label(self) -> str:
        """The engine's phase names, in the user's words."""
        return {"features": "Reading images", "head": "Quick model", "finetune": "Fine-tuning",
                "refit": "Retraining on all images"}.get(self.stage, self.stage)


class ImportJob(models.Model):
    """A zip (or folder) import, done in the background with a per-file report."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    source_name = models.CharField(max_length=255)
    upload_path = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    junk = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=list)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def get_absolute_url(self):
        return reverse("import_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def percent(self) -> int:
        return round(100 * self.processed / self.total) if self.total else 0
