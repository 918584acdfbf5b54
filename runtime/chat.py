"""Chat messages to a prompt with the GGUF's Jinja template (or the configured one).

Templates see the variables Hugging Face's ``apply_chat_template`` gives them
(``messages``, ``bos_token``, ``eos_token``, ``add_generation_prompt``,
``tools``, ``raise_exception``, ``strftime_now``) and render in a bounded
sandbox (``template_sandbox.py``): a template that refuses the conversation or
exceeds a bound is a :class:`TemplateRenderError`, which the routes answer with
a 400. The end token's text is a stop string. A GGUF without a template gets
ChatML, which most instruction-tuned models were trained on. Tools reach the
template as ``tools`` (the OpenAI list, as Hugging Face templates expect); a
template with no place for them, or whose call syntax is not known, gets the
generic JSON format described in a system message instead (``tools.py``), as
llama-server's generic handler does.

The template also tells which reasoning format the model writes (``<think>``
blocks or gpt-oss's harmony channels, ``reasoning.py``) and which marker texts
the parsers must see in the output: those that are control tokens in the
vocabulary are rendered (``LlamaModel.show_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelserve.runtime.llama_model import LlamaModel
from modelserve.runtime.reasoning import ReasoningSyntax, reasoning_syntax
from modelserve.runtime.template_sandbox import (
    BoundedTemplate,
    TemplateCompileError,
    TemplateRenderError,
)
from modelserve.runtime.tools import (
    GENERIC,
    CallSyntax,
    generic_system_prompt,
    syntax_for,
    template_knows_tools,
)

__all__ = ["ChatTemplate", "RenderedChat", "TemplateCompileError", "TemplateRenderError"]

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
        self.bos_token = bos_token
        self.syntax: CallSyntax = syntax_for(template)
        self.reasoning: ReasoningSyntax | None = reasoning_syntax(template)
        self._knows_tools = template_knows_tools(template)
        self._template = BoundedTemplate(template)
        self._bos, self._eos = bos_token, eos_token

    @classmethod
    def for_model(cls, model: LlamaModel, override: str | None) -> ChatTemplate:
        """The override, else the GGUF's template, else ChatML; its markers made visible."""
        template = override or model.metadata(TEMPLATE_KEY) or CHATML
        bos = model.token_text(model.bos) if model.bos >= 0 else ""
        eos = model.token_text(model.eos) if model.eos >= 0 else ""
        chat = cls(template, bos_token=bos, eos_token=eos)
        model.show_tokens(chat.markers())
        return chat

    def markers(self) -> set[str]:
        """Texts the output parsers look for: they must come out of the model as text."""
        found = set(self.syntax.markers())
        if self.reasoning is not None:
            found |= set(self.reasoning.markers)
        return found

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> RenderedChat:
        """The prompt; TemplateRenderError when the template refuses these messages."""
        if tools and (self.syntax is GENERIC or not self._knows_tools):
            functions = [t["function"] for t in tools]
            note = {
                "role": "system",
                "content": generic_system_prompt(functions, list_tools=not self._knows_tools),
            }
            if messages and messages[0]["role"] == "system":
                note["content"] = f"{messages[0]['content']}\n\n{note['content']}"
                messages = messages[1:]
            messages = [note, *messages]
            tools = tools if self._knows_tools else None
        prompt = self._template.render(
            messages=messages,
            tools=tools,
            bos_token=self._bos,
            eos_token=self._eos,
            add_generation_prompt=True,
        )
        return RenderedChat(prompt=prompt, stops=[self._eos] if self._eos else [])
