from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class TransferappConfig(AppConfig):
    name = "transferapp"
    verbose_name = "Transfer learning studio"


class AdminConfig(admin_apps.AdminConfig):
    """Django's admin with the app's throttled sign-in (replaces "django.contrib.admin")."""

    default = False  # named explicitly in INSTALLED_APPS; TransferappConfig stays this app's config
    default_site = "transferapp.accounts.auth.ThrottledAdminSite"
