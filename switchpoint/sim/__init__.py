"""The fleet simulator: a model-server engine model, its OpenAI-compatible HTTP front, and fleets of them."""
