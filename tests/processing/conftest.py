"""The processing tests import their helpers (``proc_helpers``) and shared event
classes (``processing_events``) as top-level modules, as the subprocess workers do."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
