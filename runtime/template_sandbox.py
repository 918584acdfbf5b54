"""Jinja chat templates compiled and rendered with bounds, whoever wrote them.

A GGUF's chat template is code from the file's author, and it runs on the
runtime's event loop for every chat request. Jinja's sandbox stops it reaching
Python's internals but not from spending time or memory: ``'a' * 10**8`` is
folded into a 100 MB constant when the template compiles, nested ``range``
loops run for minutes, and a string doubled in a loop grows without end. Here:

- the template text has a size limit, checked before compiling;
- ``*``, ``**``, ``%`` and ``+`` are intercepted (so never folded at compile
  time) and refuse results over :data:`MAX_VALUE_CHARS`; ``~`` concatenation
  is checked the same way (the code generator wraps it);
- ``range`` draws from a budget of items per render, and a call, filter or
  test given an integer over :data:`MAX_VALUE_CHARS` (``center``, ``ljust``,
  ``indent``...) is refused;
- the rendered text has a size limit, and a render stops at a deadline,
  checked at every output piece, operator, call and ``range``.

What a template raises (``raise_exception`` on roles it does not accept, an
undefined message field) or a bound it hits is a :class:`TemplateRenderError`:
the request's messages do not fit this template, a client error.
"""

from __future__ import annotations

import contextvars
import operator
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any

from jinja2 import BaseLoader, TemplateError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEMPLATE_CHARS = 256 * 1024
"""The largest template compiled; real ones are 1-20 kB (gpt-oss's, among the largest: ~16 kB)."""
MAX_VALUE_CHARS = 1 << 23
"""The longest string or list a template may build, and the largest integer it may pass."""
MAX_OUTPUT_CHARS = 1 << 24
"""The longest prompt rendered (a context holds at most 2**20 tokens)."""
MAX_RANGE_ITEMS = 100_000
"""Items all ``range`` calls of one render may produce together."""
RENDER_SECONDS = 1.0
"""How long one render may take; it runs on the event loop."""


class TemplateCompileError(ValueError):
    """A chat template that cannot be used at all (too large, or not valid Jinja)."""


class TemplateRenderError(ValueError):
    """A template failed on these messages, or exceeded a bound while rendering them."""


@dataclass
class _Budget:
    deadline: float
    range_left: int = MAX_RANGE_ITEMS

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateRenderError(f"the chat template ran longer than {RENDER_SECONDS:g} s")


_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("template_budget")


def _tick() -> None:
    budget = _budget.get(None)
    if budget is not None:
        budget.tick()


def _check_length(length: int) -> None:
    if length > MAX_VALUE_CHARS:
        raise TemplateRenderError(
            f"the chat template built a value of {length} items; the limit is {MAX_VALUE_CHARS}"
        )


def _check_size(value: Any) -> Any:
    if isinstance(value, str | list | tuple):
        _check_length(len(value))
    return value


def _check_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE_CHARS:
            raise TemplateRenderError(
                f"the chat template passed {value} to a function; the limit is {MAX_VALUE_CHARS}"
            )


def _bounded_range(*args: int) -> range:
    _check_arguments(args, {})
    items = range(*args)
    budget = _budget.get(None)
    if budget is not None:
        budget.tick()
        budget.range_left -= len(items)
        if budget.range_left < 0:
            raise TemplateRenderError(
                f"the chat template's range() loops exceed {MAX_RANGE_ITEMS} items in one render"
            )
    return items


def _bounded_filter(function: Any) -> Callable[..., Any]:
    @wraps(function)  # keeps jinja's pass_context / pass_eval_context marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_arguments(args, kwargs)
        return _check_size(function(*args, **kwargs))

    return bounded


def _strftime_now(format: str) -> str:
    """What Hugging Face templates call for today's date (Llama 3.x's system message)."""
    return datetime.now().strftime(format)


class _Generator(CodeGenerator):
    """Jinja's code generator, with every ``~`` concatenation's result size-checked."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self) -> None:
        super().__init__(loader=BaseLoader(), trim_blocks=True, lstrip_blocks=True)
        self.globals["range"] = _bounded_range
        self.globals["strftime_now"] = _strftime_now
        self.filters = {name: _bounded_filter(f) for name, f in self.filters.items()}
        self.tests = {name: _bounded_filter(f) for name, f in self.tests.items()}

    def checked(self, value: Any) -> Any:
        _tick()
        return _check_size(value)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        _tick()
        if operator_name == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                    _check_length(len(sequence) * max(count, 0))
        elif operator_name == "**" and isinstance(right, int) and isinstance(left, int):
            if abs(right) > 64 and abs(left) > 1:
                raise TemplateRenderError("the chat template raised a number to too high a power")
        elif operator_name == "%" and isinstance(left, str):
            values = right if isinstance(right, tuple) else (right,)
            _check_arguments(values, {})  # '%*s' % (10**9, x)
        result = _OPERATORS[operator_name](left, right)
        return _check_size(result)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_arguments(args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
    "%": operator.mod,
    "+": operator.add,
}


def _raise_exception(message: str) -> None:
    """Hugging Face templates call this to refuse a conversation (e.g. roles out of turn)."""
    raise TemplateRenderError(str(message))


class BoundedTemplate:
    """One chat template, compiled once, rendered with the bounds above."""

    def __init__(self, source: str) -> None:
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateCompileError(
                f"the chat template is {len(source)} characters; the limit is {MAX_TEMPLATE_CHARS}"
            )
        self.source = source
        try:
            self._template = _BoundedEnvironment().from_string(source)
        except TemplateError as exc:
            raise TemplateCompileError(f"the chat template is not valid Jinja: {exc}") from None

    def render(self, **variables: Any) -> str:
        """The text for ``variables``; TemplateRenderError when it fails or hits a bound."""
        token = _budget.set(_Budget(deadline=time.monotonic() + RENDER_SECONDS))
        try:
            return "".join(self._pieces(variables))
        except TemplateRenderError:
            raise
        except Exception as exc:  # whatever the template's own code raises
            raise TemplateRenderError(f"the chat template failed: {exc}") from None
        finally:
            _budget.reset(token)

    def _pieces(self, variables: dict[str, Any]) -> Iterator[str]:
        size = 0
        budget = _budget.get()
        for piece in self._template.generate(raise_exception=_raise_exception, **variables):
            budget.tick()
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateRenderError(
                    f"the chat template rendered over {MAX_OUTPUT_CHARS} characters"
                )
            yield piece
