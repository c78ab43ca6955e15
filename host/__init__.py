"""flipq.host."""
