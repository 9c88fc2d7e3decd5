from django.apps import AppConfig


class TransferappConfig(AppConfig):
    name = "transferapp"
    verbose_name = "Transfer learning studio"
