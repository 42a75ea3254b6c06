from django.apps import AppConfig


class CallsConfig(AppConfig):
    name = "callcenter.calls"
    label = "calls"
    verbose_name = "Calls"
    default_auto_field = "django.db.models.BigAutoField"
