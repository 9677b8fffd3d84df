"""The producer library imported into bot code (placeholder until the producer lands)."""
