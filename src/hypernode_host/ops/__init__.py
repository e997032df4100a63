"""The operator surface: check, doctor, inspection, control, dead letters, views and metrics."""
