"""flipq.boards."""
