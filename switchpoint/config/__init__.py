"""From CR manifests to the router's typed config: loading, schema validation, compiling."""
