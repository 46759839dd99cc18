"""One checker per table of the spec format: each turns its TOML table into a model, recording
every problem with its TOML path on the shared :class:`~optspec.spec.tables.checker.Checker`."""
