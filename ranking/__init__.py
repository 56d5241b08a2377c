"""ranking stage."""
