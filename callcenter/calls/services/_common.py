"""Checks every domain of the services shares."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from callcenter.errors import Forbidden, InvalidInput


def require_choice(value: str, choices: type, what: str) -> str:
    if value not in choices.values:
        raise InvalidInput(f"{what} must be one of {', '.join(choices.values)}, got {value!r}", **{what: value})
    return value


def require_permission(user: AbstractBaseUser | None, permission: str, what: str) -> None:
    if user is None or not user.is_active or not user.has_perm(permission):
        raise Forbidden(f"you need the permission {permission!r} to {what}", permission=permission)
