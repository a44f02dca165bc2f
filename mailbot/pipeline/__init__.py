"""The pipeline: the stages' contract, the runner that orders and records them, and the
wiring that builds them from the configuration."""
