"""Request signals: cheap rule signals computed for every request."""
