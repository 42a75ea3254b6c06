"""What several model admins share: the custom actions' permission hooks and
bulk review actions, and small renderers."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from callcenter.errors import CallCenterError

from .. import services


def short(text: str, length: int = 80) -> str:
    return Truncator(text).chars(length)


def metric_text(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "" if value is None else str(value)


def before_after(metrics: dict) -> str:
    if "wer_before" in metrics:
        return f"WER {metrics['wer_before']} → {metrics.get('wer_after')}"
    if "conf_before" in metrics:
        return f"confidence {metrics['conf_before']} → {metrics.get('conf_after')}"
    return ""


def html_table(header: list[str], rows: list[tuple]) -> str:
    head = format_html_join("", "<th>{}</th>", ((h,) for h in header))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),) for row in rows)
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


class ReviewActions:
    """Permission hooks for the custom admin actions."""

    def has_verify_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.verify_segment")

    def has_rerecognize_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.rerecognize_segment")

    def has_adapt_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.adapt_customer")

    def has_forget_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.forget_customer")

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.promote_modelversion")

    def _verify(self, request: HttpRequest, segment_ids: list[int]) -> None:
        try:
            done, skipped = services.segments_verify_as_recognized(segment_ids=segment_ids, user=request.user)
        except CallCenterError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"{done} segment(s) marked verified")
        if skipped:
            self.message_user(
                request,
                f"{skipped} segment(s) without recognized text were not verified: type their transcript first",
                messages.WARNING,
            )

    def _rerecognize(self, request: HttpRequest, segment_ids: list[int]) -> None:
        try:
            queued = services.segments_rerecognize(segment_ids=segment_ids, user=request.user)
        except CallCenterError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"{queued} segment(s) queued for recognition")

    def _adapt(self, request: HttpRequest, customer_ids: list[int]) -> None:
        for customer_id in sorted(set(customer_ids)):
            try:
                run = services.adaptation_request(customer_id=customer_id, user=request.user)
            except CallCenterError as exc:
                self.message_user(request, f"customer #{customer_id}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"customer #{customer_id}: adaptation #{run.pk} queued")
