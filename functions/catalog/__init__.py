"""Upstream model catalogs: a local directory, an S3/MinIO bucket, or an HTTP service."""
