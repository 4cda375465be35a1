"""Flow matching: noise schedule, training targets, samplers and guidance."""
