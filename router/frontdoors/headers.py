"""Header names of the endpoint-picker protocol, shared by the core's answers, the front doors and the gateway."""

DESTINATION_HEADER = "x-gateway-destination-endpoint"  # Gateway API Inference Extension: the chosen replica
PREFILLER_HEADER = "x-prefiller-host-port"  # llm-d: the prefill replica of a disaggregated pool
