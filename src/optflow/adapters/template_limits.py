"""A Jinja sandbox in which every render has a bounded cost.

Jinja's sandbox keeps a template away from Python's internals but not from the CPU or memory:
`{{ 10 ** (2 * 10 ** 7) }}` is folded into a constant while the template compiles (34 s, once
holding the SQLite write lock), `{{ contact_name * 10 ** 9 }}` allocates gigabytes, and a loop
over a long name inside a loop over it grows with the square of the name. `MeteredSandbox` closes
these, with limits (`TemplateLimits`) checked on a per-render `Budget`:

- Every arithmetic operator is intercepted (`call_binop`). Intercepted operators are never
  constant-folded, so compiling costs time in proportion to the source, and each operation is
  checked before it runs: integers stay below `max_int_bits`, a repeated string or list below
  `max_output_chars`, a `%` format may not pad or round to more than `max_format_width`.
- Every call, filter, attribute read, loop iteration and `~` concatenation is a step
  (`max_steps`); each value they produce is measured against the output limit, and the few
  builtins whose result can be far larger than their arguments (`replace`, `join`, `center`,
  `indent`, `batch`, `expandtabs`, `str.format` widths, ...) are checked before they run.
- The whole render may use `max_cpu_seconds` of the thread's CPU time, counted from its first look
  at the clock (after a few steps) and checked every few steps after it. CPU time rather than
  wall-clock time: on a busy machine a thread that is merely descheduled must not turn a good
  template into a failing one. The clock is read only by renders that take steps enough to need
  it: reading the thread's CPU clock is a system call, which cost up to 70 µs under load, once per
  render of every message (docs/performance.md).
- The output may not exceed `max_output_chars` plus the length of the values passed in (a held
  message may be long; a template may show it, not multiply it).

Steps, sizes and integer widths are exact and deterministic; the CPU limit is the backstop for
what they do not bound (each step of a template is cheap but not free).
"""

from __future__ import annotations

import functools
import re
import string
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import chain
from typing import Any

from jinja2 import nodes
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer


@dataclass(frozen=True)
class TemplateLimits:
    """What one template may cost. The defaults leave room for any message template worth
    sending (an SMS is at most 1,600 characters, a WhatsApp text 4,096) by a factor of ten or
    more, and keep a render that hits every limit at a few tens of milliseconds."""

    max_source_chars: int = 16 * 1024
    max_output_chars: int = 64 * 1024
    max_steps: int = 10_000
    max_int_bits: int = 1024  # about 308 decimal digits
    max_format_width: int = 1_000
    max_cpu_seconds: float = 0.05


class TemplateLimitExceeded(Exception):
    """A template went over one of its limits; the message says which."""


_TIME_CHECK_EVERY = 16  # steps between two looks at the CPU clock (a system call)


class Budget:
    """The limits of one render, and what it has used of them."""

    __slots__ = ("cpu_deadline", "limits", "max_chars", "steps_left")

    def __init__(self, limits: TemplateLimits, input_chars: int = 0) -> None:
        self.limits = limits
        self.max_chars = limits.max_output_chars + input_chars
        self.steps_left = limits.max_steps
        self.cpu_deadline: float | None = None  # set at the first look at the clock

    def step(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise TemplateLimitExceeded(
                f"more than {self.limits.max_steps} steps (loop iterations, calls, filters, operations)")
        if self.steps_left % _TIME_CHECK_EVERY == 0:
            self.check_time()

    def check_time(self) -> None:
        now = time.thread_time()
        if self.cpu_deadline is None:
            self.cpu_deadline = now + self.limits.max_cpu_seconds
        elif now > self.cpu_deadline:
            raise TemplateLimitExceeded(f"took more than {self.limits.max_cpu_seconds * 1000:g} ms of CPU time")

    def check_chars(self, chars: int, what: str = "a value") -> None:
        if chars > self.max_chars:
            raise TemplateLimitExceeded(f"{what} would be longer than {self.max_chars} characters")

    def check_int_bits(self, bits: int) -> None:
        if bits > self.limits.max_int_bits:
            raise TemplateLimitExceeded(f"a number would be larger than {self.limits.max_int_bits} bits")

    def produced(self, value: Any) -> Any:
        """Check a value a template made (or read) against the size limits, and pass it on."""
        if isinstance(value, int):
            self.check_int_bits(value.bit_length())
        else:
            self.check_chars(size_of(value))
        return value


_BUDGET: ContextVar[Budget | None] = ContextVar("optflow_template_budget", default=None)


def current_budget() -> Budget:
    """The budget of the render running in this thread. Outside a render there is none, which
    also keeps Jinja from folding filters into constants while it compiles."""
    budget = _BUDGET.get()
    if budget is None:
        raise TemplateLimitExceeded("a metered template ran outside a render budget")
    return budget


class metered:
    """Within the block, the rewritten templates charge `budget`. A class rather than a
    generator-based context manager: every render of every message enters one."""

    __slots__ = ("budget", "token")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __enter__(self) -> Budget:
        self.token = _BUDGET.set(self.budget)
        return self.budget

    def __exit__(self, *_: object) -> None:
        _BUDGET.reset(self.token)


def size_of(value: Any, depth: int = 0) -> int:
    """Characters (or items) a value holds, looking three levels into containers: a list of
    long strings is as large as the strings."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, list | tuple | set | frozenset | dict):
        if depth >= 3:
            return len(value)
        items: Iterable[Any] = chain.from_iterable(value.items()) if isinstance(value, dict) else value
        return len(value) + sum(size_of(item, depth + 1) for item in items)
    return 1


# ----------------------------------------------------------------------------- pre-checks

# printf-style conversions: %[(key)][flags][width][.precision][length]type
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)


def check_percent_format(budget: Budget, fmt: str | bytes) -> None:
    """`'%5000d' % 1` pads to any width it is asked for: widths and precisions are capped and
    `*` (a width taken from the arguments) is refused."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    for match in _PERCENT_SPEC.finditer(text):
        for number in match.group(1, 2):
            _check_width(budget, number)


def check_format_method(budget: Budget, fmt: str) -> None:
    """`'{:>5000}'.format(x)`: the same cap for `str.format` specs; a spec built from the
    arguments (`{:{}}`) is refused."""
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None or not spec:
            continue
        if "{" in spec:
            raise TemplateLimitExceeded("a format spec may not be taken from the arguments")
        for number in re.findall(r"\d+", spec):
            _check_width(budget, number)


def _check_width(budget: Budget, number: str | None) -> None:
    if number == "*":
        raise TemplateLimitExceeded("a format width may not be taken from the arguments ('*')")
    if number and int(number) > budget.limits.max_format_width:
        raise TemplateLimitExceeded(f"a format width or precision is over {budget.limits.max_format_width}")


def _replaced_size(text: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and 0 <= count < found:
        found = count
    return len(text) + found * (len(new) - len(old))


def _check_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        budget.check_int_bits(right * left.bit_length())
    elif operator == "*":
        if ints:
            budget.check_int_bits(left.bit_length() + right.bit_length())
        elif isinstance(right, int):
            budget.check_chars(size_of(left) * right, "a repeated value")
        elif isinstance(left, int):
            budget.check_chars(size_of(right) * left, "a repeated value")
    elif operator == "%" and isinstance(left, str | bytes):
        check_percent_format(budget, left)


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _check_text_method(budget: Budget, text: str | bytes, method: str, args: tuple[Any, ...],
                       kwargs: Mapping[str, Any]) -> None:
    """The str and bytes methods whose result can be much larger than their arguments. Widths
    (`center`, `ljust`, `zfill`, ...) are covered by the cap on every integer argument."""
    if method == "replace":
        budget.check_chars(_replaced_size(text, _arg(args, kwargs, 0, "old", ""), _arg(args, kwargs, 1, "new", ""),
                                          _arg(args, kwargs, 2, "count", -1)), "a replaced text")
    elif method == "expandtabs":
        tabsize = _arg(args, kwargs, 0, "tabsize", 8)
        tab = b"\t" if isinstance(text, bytes) else "\t"
        if isinstance(tabsize, int):
            budget.check_chars(len(text) + text.count(tab) * tabsize, "a text with its tabs expanded")  # type: ignore[arg-type]
    elif method == "translate" and isinstance(text, str):
        raise TemplateLimitExceeded("str.translate is not available in templates")


# ----------------------------------------------------------------------------- filters


def _check_filter(budget: Budget, name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """Pre-checks of the built-in filters whose result can be far larger than their input.
    Returns the value to filter (`join` needs its items as a list to measure them)."""
    if name == "replace" and isinstance(value, str):
        budget.check_chars(_replaced_size(value, _arg(args, kwargs, 0, "old", ""), _arg(args, kwargs, 1, "new", ""),
                                          _arg(args, kwargs, 2, "count", None)), "a replaced text")
    elif name == "center":
        width = _arg(args, kwargs, 0, "width", 80)
        if isinstance(width, int):
            budget.check_chars(width, "a centred text")
    elif name == "indent":
        width = _arg(args, kwargs, 0, "width", 4)
        per_line = width if isinstance(width, int) else size_of(str(width))
        text = str(value)
        budget.check_chars(len(text) + (text.count("\n") + 1) * per_line, "an indented text")
    elif name == "join":
        value = list(value)
        separator = _arg(args, kwargs, 0, "d", "")
        budget.check_chars(size_of(value) + size_of(separator) * len(value), "a joined text")
    elif name == "wordwrap":
        wrapstring = _arg(args, kwargs, 2, "wrapstring", None)
        if isinstance(wrapstring, str):
            text = str(value)
            budget.check_chars(len(text) + (len(text) + 1) * len(wrapstring), "a wrapped text")
    elif name in ("batch", "slice"):
        count = _arg(args, kwargs, 0, "linecount" if name == "batch" else "slices", 1)
        if isinstance(count, int) and count > budget.max_chars:
            raise TemplateLimitExceeded(f"{name}() into more than {budget.max_chars} parts")
    elif name == "format" and isinstance(value, str):
        check_percent_format(budget, value)
    elif name == "sum":
        start = _arg(args, kwargs, 1, "start", 0)
        if not isinstance(start, int | float):
            raise TemplateLimitExceeded("sum() may only add numbers")
    return value


def _metered_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Jinja passes the context or environment first to filters marked for it; the wrapper
    # keeps the mark (functools.wraps copies the function's attributes).
    passes_first = getattr(func, "jinja_pass_arg", None) is not None

    @functools.wraps(func)
    def metered_filter(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.step()
        at = 1 if passes_first else 0
        if len(args) > at:
            value = _check_filter(budget, name, args[at], args[at + 1:], kwargs)
            args = (*args[:at], value, *args[at + 1:])
        return budget.produced(func(*args, **kwargs))

    return metered_filter


CAPTURE_FILTER = "optflow_captured"
"""A filter put on every `{% set x %}...{% endset %}` block, to measure what it captured."""


def _captured(value: Any) -> Any:
    return value


class _Metering(NodeTransformer):
    """Rewrites a parsed template so that loops and `~` go through the budget as well."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)  # changes the node in place
        node.iter = nodes.Call(nodes.EnvironmentAttribute("metered_iter"), [node.iter], [], None, None,
                               lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.Tuple(node.nodes, "load", lineno=node.lineno)
        return nodes.Call(nodes.EnvironmentAttribute("metered_concat"), [items], [], None, None, lineno=node.lineno)

    def visit_AssignBlock(self, node: nodes.AssignBlock) -> nodes.Node:
        self.generic_visit(node)
        node.filter = nodes.Filter(node.filter, CAPTURE_FILTER, [], [], None, None, lineno=node.lineno)
        return node


class MeteredSandbox(ImmutableSandboxedEnvironment):
    """`ImmutableSandboxedEnvironment` whose templates run within a `Budget` (see the module).
    Render its templates only inside `metered(Budget(...))`; compile them with `compile_metered`."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, limits: TemplateLimits, **options: Any) -> None:
        super().__init__(**options)
        self.limits = limits
        self.filters = {name: _metered_filter(name, func) for name, func in self.filters.items()}
        self.filters[CAPTURE_FILTER] = _metered_filter(CAPTURE_FILTER, _captured)
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs; no message needs it
        self.globals["range"] = self.metered_range

    def compile_metered(self, source: str, name: str) -> types.CodeType:
        if len(source) > self.limits.max_source_chars:
            raise TemplateLimitExceeded(f"the template is longer than {self.limits.max_source_chars} characters")
        tree = self.parse(source, name=name)
        metered_tree = _Metering().visit(tree)
        metered_tree.set_environment(self)
        code: types.CodeType = self.compile(metered_tree, name=name)
        return code

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """One flat dict instead of Jinja's ChainMap, which it flattens twice per render (half
        the cost of rendering a short text). Nothing changes the globals once templates exist."""
        return {**self.globals, **(d or {})}

    # -- hooks Jinja calls from sandboxed code

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.step()
        _check_binop(budget, operator, left, right)
        return budget.produced(super().call_binop(context, operator, left, right))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.step()
        for arg in chain(args, kwargs.values()):
            budget.produced(arg)
        if isinstance(obj, types.BuiltinMethodType):
            for arg in chain(args, kwargs.values()):
                if isinstance(arg, int) and arg > budget.max_chars:  # str.center, int.to_bytes, ...
                    raise TemplateLimitExceeded(f"a width or count over {budget.max_chars} passed to {obj.__name__}()")
            owner = getattr(obj, "__self__", None)
            if isinstance(owner, str | bytes):
                _check_text_method(budget, owner, obj.__name__, args, kwargs)
        return budget.produced(super().call(context, obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget = current_budget()
        budget.step()
        return budget.produced(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = current_budget()
        budget.step()
        return budget.produced(super().getitem(obj, argument))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_format_method(current_budget(), value.__self__)
        return wrapped

    # -- what the rewritten templates call

    def metered_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = current_budget()
        for item in iterable:
            budget.step()
            yield item

    def metered_concat(self, items: tuple[Any, ...]) -> str:
        budget = current_budget()
        budget.step()
        budget.check_chars(sum(size_of(item) for item in items), "a joined text")
        joined: str = markup_join(items) if any(hasattr(i, "__html__") for i in items) else str_join(items)
        return budget.produced(joined)  # type: ignore[no-any-return]

    def metered_range(self, *args: int) -> range:
        numbers = range(*args)
        budget = current_budget()
        if len(numbers) > budget.limits.max_steps:
            raise TemplateLimitExceeded(f"range() of more than {budget.limits.max_steps} numbers")
        return numbers
