"""Authentication: password hashing, JWT issue/verify with a pinned algorithm, roles."""
