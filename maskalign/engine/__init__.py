"""Training machinery shared by every objective: optimizer groups, schedules, the loop, resume."""
