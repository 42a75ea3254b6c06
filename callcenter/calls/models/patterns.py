"""Patterns the check constraints of the models hold their columns to."""

E164_REGEX = r"^\+[1-9][0-9]{1,14}$"
SHA256_REGEX = r"^[0-9a-f]{64}$"
