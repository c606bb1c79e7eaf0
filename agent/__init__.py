"""vcs-edge: the application (config, registry, schedules, instances, streams, store, sinks, API, runtime)."""

__version__ = "0.1.0"
