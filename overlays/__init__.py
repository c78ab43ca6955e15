"""flipq.overlays."""
