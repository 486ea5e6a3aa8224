"""mmc-stream's service: everything that talks to Kafka, Redis, HTTP or a terminal.

The math lives in :mod:`scoring`; this package decodes, validates, stores and publishes.
"""
