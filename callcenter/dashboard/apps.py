from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "callcenter.dashboard"
    label = "dashboard"
    verbose_name = "Agent page"
