from django.contrib import admin

from transferapp.models import Image, Label, Project, TrainingRun


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "created_at")


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ("name", "project")


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("original_name", "label", "project", "created_at")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("pk", "project", "status", "base_model", "preset", "created_at")
    list_filter = ("status",)
