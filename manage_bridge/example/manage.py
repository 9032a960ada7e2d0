#!/usr/bin/env python3
"""The reference CVProject's manage.py (cvtasks' demo and test project)."""
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The cvtasks app lives one folder up (manage_bridge/); a real project installs it instead.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "CVProject.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
