"""Front doors: translate a transport (gRPC Route/Report, Envoy external processing) to the core and back."""
