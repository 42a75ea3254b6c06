"""``python manage.py meta_train_customers``: one round of meta-training over
customers with verified audio, promoted only if it beats the active model on
held-out customers (what Celery beat runs every ``TRAINING_INTERVAL_S``)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from callcenter.calls import services
from callcenter.celery import app as celery_app


class Command(BaseCommand):
    help = (
        "Meta-train the active model over customers with verified audio; promote the candidate only when it "
        "beats the active model on held-out customers."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--outer-steps", type=int, default=None, help="meta (outer) steps; default TRAINING_OUTER_STEPS")
        parser.add_argument(
            "--force", action="store_true", help="train even without TRAINING_MIN_NEW_VERIFIED_S of new verified audio"
        )
        parser.add_argument("--queue", action="store_true", help="queue the Celery task instead of running here")

    def handle(self, *args, outer_steps: int | None, force: bool, queue: bool, **options) -> None:
        if outer_steps is not None and outer_steps < 1:
            raise CommandError(f"--outer-steps must be at least 1, got {outer_steps}")
        if queue:
            result = celery_app.send_task("training.meta_train", kwargs={"outer_steps": outer_steps, "force": force})
            self.stdout.write(f"queued meta-training task {result.id}")
            return
        run = services.meta_training_run(cfg=services.training_config(outer_steps=outer_steps, force=force))
        self.stdout.write(f"meta-training #{run.pk}: {run.status}: {run.reason}")
        self.stdout.write(json.dumps(run.metrics, indent=2, sort_keys=True))
        if run.status == run.Status.FAILED:
            raise CommandError(run.reason)
