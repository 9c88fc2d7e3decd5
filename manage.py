#!/usr/bin/env python
"""Django's command-line utility for transferapp."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "transferapp.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A missing setting is a set-up question, not a crash: say it in one line.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
