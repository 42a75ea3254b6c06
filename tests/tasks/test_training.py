"""The ``training.meta_train`` task and the ``meta_train_customers`` command:
beat schedules the task, the task and the command refuse bad arguments with
nothing recorded, and both run one round of ``services.meta_training_run``
(tested in tests/callcenter/calls/services/test_training.py)."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from asr_core.small.checkpoint import DEFAULT_CHECKPOINT

from callcenter import asr
from callcenter.calls import services
from callcenter.calls.models import TrainingRun
from tasks.training import meta_train_customers

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.MODEL_DIR = str(tmp_path / "models")
    settings.ASR_DECODER = "greedy"
    settings.ADAPTATION_AFTER_CALL = False
    return tmp_path


def _shipped_version():
    rec = asr.recognizer(decoder="greedy")
    version = services.model_version_register(name="shipped", checkpoint=DEFAULT_CHECKPOINT, sha256=asr.model_version(rec))
    return services.model_version_promote(model_version_id=version.pk)


def test_beat_runs_meta_training_periodically_and_the_command_reports_and_refuses_bad_input(setup):
    from callcenter.celery import app

    entry = app.conf.beat_schedule["meta-train-customers"]
    assert entry["task"] == "training.meta_train" and entry["schedule"] > 0
    assert "training.meta_train" in app.tasks and "adaptation.customer" in app.tasks
    with pytest.raises(CommandError, match="--outer-steps must be at least 1"):
        call_command("meta_train_customers", "--outer-steps", "0")
    assert not TrainingRun.objects.exists()
    _shipped_version()
    call_command("meta_train_customers")
    assert TrainingRun.objects.get().status == "skipped"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"outer_steps": 0}, "outer_steps must be >= 1"),
        ({"outer_steps": "3"}, "outer_steps must be a whole number"),
        ({"outer_steps": True}, "outer_steps must be a whole number"),
        ({"force": "yes"}, "force must be true or false"),
    ],
)
def test_the_task_refuses_bad_arguments_and_records_nothing(setup, kwargs, message):
    with pytest.raises(ValueError, match=message):
        meta_train_customers.run(**kwargs)
    assert not TrainingRun.objects.exists()


def test_the_task_runs_one_round_and_returns_it(setup):
    _shipped_version()

    result = meta_train_customers.run(outer_steps=1)

    run = TrainingRun.objects.get()
    assert result == {"run": run.pk, "status": "skipped", "reason": run.reason, "metrics": run.metrics}
    assert "s of newly verified audio" in run.reason
