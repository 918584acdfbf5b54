"""Authentication and authorization failures, each with its HTTP status and reason."""

from __future__ import annotations


class AuthError(Exception):
    """Base: ``status`` is 401 (who are you?) or 403 (you may not); ``code`` is stable."""

    status = 401
    code = "invalid_token"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingToken(AuthError):
    code = "missing_token"


class InvalidToken(AuthError):
    """Malformed, badly signed, wrong algorithm, or missing a required claim."""

    code = "invalid_token"


class ExpiredToken(AuthError):
    code = "expired_token"


class NotYetValidToken(AuthError):
    code = "token_not_yet_valid"


class WrongAudience(AuthError):
    code = "wrong_audience"


class WrongIssuer(AuthError):
    code = "wrong_issuer"


class Forbidden(AuthError):
    """The token is valid but its role or scope does not allow this."""

    status = 403
    code = "forbidden"


class RevokedKey(AuthError):
    """An API key its owner or an admin revoked: refused everywhere from then on."""

    code = "revoked_key"


class DisabledUser(AuthError):
    """The credential is genuine but an admin disabled its user: every door refuses it."""

    status = 403
    code = "user_disabled"
