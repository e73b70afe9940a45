"""The CustomResourceDefinitions (YAML), shipped as package data: the single source of the CR schemas."""
