"""The serve pipeline's five steps: each takes one CloudEvent and replies with the next."""
