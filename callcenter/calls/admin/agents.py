"""Agents."""

from __future__ import annotations

from django.contrib import admin

from ..models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "created"]
    search_fields = ["display_name", "user__username", "user__email"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
