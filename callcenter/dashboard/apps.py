from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "callcenter.dashboard"
    label = "dashboard"
    verbose_name = "Agent page"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from .signals import close_feeds_on_logout

        user_logged_out.connect(close_feeds_on_logout, dispatch_uid="dashboard.close_feeds_on_logout")
