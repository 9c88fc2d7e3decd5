from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from transferapp.accounts import api_keys
from transferapp.models import Image, Label, Project, TrainingRun, UserQuota


class UserQuotaInline(admin.StackedInline):
    model = UserQuota
    can_delete = True
    verbose_name_plural = "quota (empty fields use the server's defaults, QUOTA_* settings)"


class UserWithQuotaAdmin(UserAdmin):
    """Deactivating a user here (the box on their page, or the list's action) revokes their API keys.

    Done here rather than in a signal (the project avoids signals): these are the off-boarding paths
    an administrator uses. Any other (a shell's user.save()) is covered by the key lookup, which
    refuses keys of an inactive owner."""

    inlines = [*UserAdmin.inlines, UserQuotaInline]
    actions = ["deactivate_and_revoke_keys"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            self._revoke_keys(request, [obj])

    @admin.action(description="Deactivate selected users and revoke their API keys")
    def deactivate_and_revoke_keys(self, request, queryset):
        users = list(queryset)
        queryset.update(is_active=False)
        self._revoke_keys(request, users)

    def _revoke_keys(self, request, users):
        revoked = sum(api_keys.api_keys_revoke_for_user(user=user) for user in users)
        self.message_user(request, f"{revoked} API key{'' if revoked == 1 else 's'} revoked. Revoked keys stay revoked "
                                   "if the account is reactivated: its owner makes new ones.", messages.INFO)


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
