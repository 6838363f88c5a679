"""Public contracts: subjects, headers and event models (see DESIGN.md)."""
