"""Object store: one interface, a MinIO backend and a local-directory backend."""
