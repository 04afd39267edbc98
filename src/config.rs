//! Config: the YAML file, parsed once into validated types.
