"""The running service: the main loop, its inbox, the combine queue, health and alarms."""
