"""OS seams: the clock, sd_notify, the pid lock, mounts, bounded child programs, crash points."""
