"""Find the GGUF to serve: a file, a directory (KServe's /mnt/models), or s3://.

``s3://`` URIs are pulled with kserve-storage, the code KServe's own storage
initializer runs, so the same variables apply (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``S3_USE_HTTPS``,
``S3_VERIFY_SSL``). Whatever the source, a given sha256 is checked before the
file is used, and the header is inspected so a corrupt file fails start-up with
a precise message rather than a crash inside llama.cpp.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

from modelserve.shared.gguf_inspect import GGUFError, GGUFInfo, inspect_gguf
from modelserve.shared.hashing import sha256_file

log = logging.getLogger(__name__)


class ModelSourceError(RuntimeError):
    """The model cannot be found, fetched or trusted; the message says which."""


def _single_gguf(directory: Path, model_name: str) -> Path:
    candidates = sorted(p for p in directory.rglob("*.gguf") if p.is_file())
    if not candidates:
        raise ModelSourceError(f"no .gguf file in {directory}")
    if len(candidates) == 1:
        return candidates[0]
    named = [p for p in candidates if p.stem == model_name]
    if len(named) == 1:
        return named[0]
    listing = ", ".join(str(p.relative_to(directory)) for p in candidates)
    raise ModelSourceError(
        f"{directory} holds several GGUF files ({listing}); name one with --model"
    )


def _download_s3(uri: str, download_dir: Path) -> Path:
    from kserve_storage import Storage  # heavy (boto3): only when an s3:// URI is used

    target = download_dir / hashlib.sha256(uri.encode()).hexdigest()[:24]
    target.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", uri, target)
    try:
        Storage.download(uri, str(target))
    except Exception as exc:  # kserve-storage raises RuntimeError and botocore errors
        raise ModelSourceError(f"cannot download {uri}: {exc}") from exc
    return _single_gguf(target, Path(uri).stem)


def resolve_model(
    model: str, *, model_name: str, sha256: str | None, download_dir: Path
) -> tuple[Path, GGUFInfo]:
    """The local GGUF path and its header; raise ModelSourceError if unusable."""
    if model.startswith("s3://"):
        path = _download_s3(model, download_dir)
    else:
        source = Path(model)
        if not source.exists():
            raise ModelSourceError(f"model path {source} does not exist")
        path = _single_gguf(source, model_name) if source.is_dir() else source
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            if model.startswith("s3://"):  # never leave an untrusted file to be reused
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
            raise ModelSourceError(
                f"sha256 mismatch for {model}: expected {sha256}, got {actual}; refusing to serve"
            )
    try:
        info = inspect_gguf(path)
    except GGUFError as exc:
        raise ModelSourceError(f"cannot serve {path}: {exc}") from None
    return path, info
