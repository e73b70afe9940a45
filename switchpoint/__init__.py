"""Switchpoint: a Kubernetes-native fleet router for LLM inference."""

__version__ = "0.1.0"
