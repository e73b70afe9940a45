"""Envoy external processing (ext_proc) front door: the endpoint-picker protocol of the Gateway API Inference Extension."""
