"""``python manage.py create_line NAME``: create a media line and print its
token, once (only its hash is stored)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from callcenter.calls import services
from callcenter.errors import CallCenterError


class Command(BaseCommand):
    help = "Create a media line (trunk) and print its secret token once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="a unique name for the line, e.g. twilio-main")
        parser.add_argument("--disabled", action="store_true", help="create it disabled")
        parser.add_argument(
            "--token-only", action="store_true", help="print only the token (for scripts): NAME's token on one line"
        )

    def handle(self, *args, name: str, disabled: bool, token_only: bool, **options) -> None:
        try:
            line, token = services.line_create(name=name, enabled=not disabled)
        except CallCenterError as exc:
            raise CommandError(exc.message) from None
        if token_only:
            self.stdout.write(token)
            return
        self.stdout.write(f"Created line {line.name!r} (id {line.pk}{', disabled' if disabled else ''}).")
        self.stdout.write("Its token is shown only now; store it where the telephony side is configured:")
        self.stdout.write(f"  token:  {token}")
        self.stdout.write(f"  Twilio: wss://YOUR-HOST/ws/media/twilio/{token}")
        self.stdout.write(f"  PCM:    wss://YOUR-HOST/ws/media/pcm/{token}")
