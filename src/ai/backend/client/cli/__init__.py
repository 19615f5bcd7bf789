"""The ``backend.ai`` command line interface (entry point: :data:`ai.backend.client.cli.main.main`)."""
