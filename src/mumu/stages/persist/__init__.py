"""The persist stage."""
