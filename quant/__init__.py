"""flipq.quant."""
