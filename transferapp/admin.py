from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from transferapp.models import Image, Label, Project, TrainingRun, UserQuota


class UserQuotaInline(admin.StackedInline):
    model = UserQuota
    can_delete = True
    verbose_name_plural = "quota (empty fields use the server's defaults, QUOTA_* settings)"


class UserWithQuotaAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserQuotaInline]


admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), UserWithQuotaAdmin)


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
