#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import sys

from django.core.exceptions import ImproperlyConfigured


def main() -> None:
    from callcenter.entry import exit_on_configuration_error, use_project_settings

    use_project_settings()
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        exit_on_configuration_error(exc)


if __name__ == "__main__":
    main()
