"""The request bodies the OpenAI routes accept, each field declared once with its range.

Fields OpenAI clients send that the runtime does not act on (``user``,
``store``, ``metadata``, ...) are ignored, as OpenAI's own server ignores what
it does not know; a field the runtime does act on with a value outside its
range is refused with a 400 naming the field. llama-server's sampling extras
(``top_k``, ``min_p``, ``repeat_penalty``, ``typical_p``, ``grammar``) are
accepted as extra body fields, with llama-server's meanings.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from modelserve.runtime.logprobs import CHAT_TOP_MAX, COMPLETION_TOP_MAX
from modelserve.runtime.sampling import MIN_P, TOP_K, SamplingParams

MAX_STOPS = 4
MAX_CHOICES = 128


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GenerationRequest(_Body):
    """What chat and completions share."""

    _cache_scope: str = PrivateAttr(default="")

    @property
    def cache_scope(self) -> str:
        """Whose prompt this is: prefix reuse stays within one scope
        (``shared/cache_scope.py``). Set from the gateway's header, never the body."""
        return self._cache_scope

    def scoped(self, scope: str) -> None:
        self._cache_scope = scope

    model: str
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[int, float] | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # llama-server's extras
    top_k: int = Field(default=TOP_K, ge=0)
    min_p: float = Field(default=MIN_P, ge=0, le=1)
    repeat_penalty: float = Field(default=1.0, gt=0)
    typical_p: float = Field(default=1.0, gt=0, le=1)
    grammar: str | None = Field(default=None, min_length=1)

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences are allowed")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, bias: dict[int, float] | None) -> dict[int, float] | None:
        if bias and any(not -100 <= b <= 100 for b in bias.values()):
            raise ValueError("biases must lie between -100 and 100")
        return bias

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def sampling(self, seed: int | None) -> SamplingParams:
        """The sampling of one choice; ``seed`` is that choice's own (or None)."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias={int(t): float(b) for t, b in (self.logit_bias or {}).items()},
            seed=seed,
            top_k=self.top_k,
            min_p=self.min_p,
            typical_p=self.typical_p,
            repeat_penalty=self.repeat_penalty,
        )


class CompletionRequest(GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=COMPLETION_TOP_MAX)

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, prompt: Any) -> Any:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("at least one prompt is needed")
        return prompt

    def prompts(self) -> list[str | list[int]]:
        """Each prompt, as text or token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(p, int) for p in prompt):
            return [[int(t) for t in prompt]]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


class FunctionCall(_Body):
    name: str
    arguments: str = "{}"


class ToolCall(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates expect it (tool-call arguments as objects)."""
        message: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(),
        }
        if self.name is not None:
            message["name"] = self.name
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": _arguments(call.function.arguments),
                    },
                }
                for call in self.tool_calls
            ]
        return message


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class FunctionDefinition(_Body):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(_Body):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is json_schema")
        return self


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=CHAT_TOP_MAX)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: logprobs must be true to ask for top_logprobs")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise ValueError(
                    f"tool_choice: no tool named {self.tool_choice.function.name!r} is declared"
                )
        elif self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice: 'required' needs tools")
        formatted = self.response_format is not None and self.response_format.type != "text"
        if self.grammar is not None and formatted:
            raise ValueError("grammar: give either grammar or response_format, not both")
        return self

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def calls_tools(self) -> bool:
        """Whether the answer may hold tool calls (tools given, tool_choice not none)."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def forced_tool(self) -> str | Literal[True] | None:
        """The function a call is forced to (True: any declared one; None: not forced)."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        return True if self.tool_choice == "required" else None


class EmbeddingRequest(_Body):
    model: str
    input: str | list[str]
    # The openai client asks for base64 by default: little-endian float32 bytes.
    encoding_format: Literal["float", "base64"] = "float"


class TokenizeRequest(_Body):
    """llama-server's ``POST /tokenize``."""

    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(_Body):
    """llama-server's ``POST /detokenize``."""

    tokens: list[int]
