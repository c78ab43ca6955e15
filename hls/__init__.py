"""flipq.hls."""
