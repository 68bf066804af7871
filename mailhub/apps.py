from django.apps import AppConfig


class MailhubConfig(AppConfig):
    name = "mailhub"
    verbose_name = "Mail"
    default_auto_field = "django.db.models.BigAutoField"
