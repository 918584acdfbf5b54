"""Chat messages to a prompt with the GGUF's Jinja template (or the configured one).

Rendering goes through llama-cpp-python's ``Jinja2ChatFormatter`` (no model
needed), so templates see the same variables as before (``bos_token``,
``eos_token``, ``add_generation_prompt``, ``raise_exception``) and the end
token's text is a stop string, as llama-cpp-python's chat handler makes it.
A GGUF without a template gets ChatML, which most instruction-tuned models
were trained on. Tools reach the template as ``tools`` (the OpenAI list, as
Hugging Face templates expect); a template with no place for them gets them
described in a system message instead (``tools.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from modelserve.runtime.llama_model import LlamaModel
from modelserve.runtime.tools import (
    CallSyntax,
    syntax_for,
    template_knows_tools,
    tools_system_prompt,
)

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEMPLATE_KEY = "tokenizer.chat_template"


@dataclass(frozen=True)
class RenderedChat:
    prompt: str
    stops: list[str]


class ChatTemplate:
    """A Jinja chat template bound to one model's begin/end tokens."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.bos_token = bos_token
        self.syntax: CallSyntax = syntax_for(template)
        self._knows_tools = template_knows_tools(template)
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos_token, bos_token=bos_token
        )

    @classmethod
    def for_model(cls, model: LlamaModel, override: str | None) -> ChatTemplate:
        """The override, else the GGUF's template, else ChatML."""
        template = override or model.metadata(TEMPLATE_KEY) or CHATML
        bos = model.token_text(model.bos) if model.bos >= 0 else ""
        eos = model.token_text(model.eos) if model.eos >= 0 else ""
        return cls(template, bos_token=bos, eos_token=eos)

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> RenderedChat:
        if tools and not self._knows_tools:
            functions = [t["function"] for t in tools]
            note = {"role": "system", "content": tools_system_prompt(functions)}
            if messages and messages[0]["role"] == "system":
                note["content"] = f"{messages[0]['content']}\n\n{note['content']}"
                messages = messages[1:]
            messages = [note, *messages]
            tools = None
        result = self._formatter(messages=cast(Any, messages), tools=cast(Any, tools))
        stops = (
            result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        )
        return RenderedChat(prompt=result.prompt, stops=[s for s in stops if s])
