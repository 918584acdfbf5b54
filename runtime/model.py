"""The KServe model: loading makes it ready; the OpenAI routes do the serving."""

from __future__ import annotations

import logging
from typing import Any

from modelserve.runtime.config import RuntimeConfig
from modelserve.runtime.engine import LlamaEngine
from modelserve.runtime.metrics import RuntimeMetrics
from modelserve.runtime.source import resolve_model
from modelserve.shared.gguf_inspect import GGUFInfo
from modelserve.shared.kserve_sdk import kserve_model_base

log = logging.getLogger(__name__)


class LlamaCppModel(kserve_model_base()):  # type: ignore[misc]
    """A GGUF served by llama.cpp; KServe's readiness follows ``load()``."""

    def __init__(self, config: RuntimeConfig, metrics: RuntimeMetrics) -> None:
        super().__init__(config.model_name)
        self.config = config
        self.metrics = metrics
        self.engine: LlamaEngine | None = None
        self.info: GGUFInfo | None = None

    def load(self) -> bool:
        """Resolve, verify and load the GGUF; raise with a precise message if it can't be."""
        path, info = resolve_model(
            self.config.model,
            model_name=self.config.model_name,
            sha256=self.config.sha256,
            download_dir=self.config.download_dir,
        )
        if info.context_length and self.config.n_ctx > info.context_length:
            log.warning(
                "n_ctx %d exceeds the %d tokens %s was trained for",
                self.config.n_ctx,
                info.context_length,
                path.name,
            )
        self.info = info
        self.engine = LlamaEngine.load(path, self.config, self.metrics)
        self.ready = True
        log.info(
            "loaded %s (%s, %s, %d parameters) as %r",
            path,
            info.architecture,
            info.file_type,
            info.parameter_count,
            self.name,
        )
        return True

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        raise NotImplementedError(
            "this runtime speaks the OpenAI protocol: POST /openai/v1/chat/completions"
        )

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.close()
