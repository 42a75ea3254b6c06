from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "callcenter.dashboard"
    label = "dashboard"
    verbose_name = "Agent page"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_delete, post_save

        from .signals import close_feeds_of_changed_user, close_feeds_on_logout

        user_logged_out.connect(close_feeds_on_logout, dispatch_uid="dashboard.close_feeds_on_logout")
        user = get_user_model()
        post_save.connect(close_feeds_of_changed_user, sender=user, dispatch_uid="dashboard.close_feeds_user_saved")
        post_delete.connect(close_feeds_of_changed_user, sender=user, dispatch_uid="dashboard.close_feeds_user_deleted")
