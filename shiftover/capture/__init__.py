"""Trigger-based change capture, for applications whose code cannot use the dual-writer."""

from shiftover.capture.changelog import (
    ReplayResult,
    capture_ddl,
    capture_installed,
    changelog_depth,
    install_capture,
    remove_capture,
    replay_changelog,
)

__all__ = [
    "ReplayResult",
    "capture_ddl",
    "capture_installed",
    "changelog_depth",
    "install_capture",
    "remove_capture",
    "replay_changelog",
]
