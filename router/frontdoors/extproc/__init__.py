"""Envoy external processing front door: the endpoint-picker protocol of the Gateway API Inference Extension."""
