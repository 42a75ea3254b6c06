from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "callcenter.analytics"
    label = "analytics"
    verbose_name = "Call analytics"
    default_auto_field = "django.db.models.BigAutoField"
