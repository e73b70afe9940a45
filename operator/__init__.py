"""The Switchpoint operator (kopf): reconciles ModelPools, RoutingPolicies and Budgets."""
