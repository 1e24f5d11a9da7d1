"""One run as a process: the trainer loop, the service that serves it on a Unix socket,
the wire protocol, checkpoints, evaluation, metrics, and every helper that owns files,
threads or processes.

This package's own import stays light (no torch): the app imports `protocol`, `service`
and `metrics` from here to talk to a run.
"""
