"""Noticing files: watchdog observers, their handler, directory scans, inotify overflows."""
