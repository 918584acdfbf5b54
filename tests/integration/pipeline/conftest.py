"""A pipeline wired to real Postgres and real MinIO: the fixtures of support/pipeline.py."""

from support.pipeline import pipeline_factory, tiny_gguf

__all__ = ["pipeline_factory", "tiny_gguf"]
