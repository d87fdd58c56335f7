"""A saved chart's parameters: declared, checked, and filled into its query.

A value can never change the query's structure: it replaces a `{{name}}`
placeholder inside a JSON string, and the query is then a Python object
again, never text put back together, so quotes, braces or backslashes in a
value stay characters of that string. The one exception is a string that is
exactly the placeholder of an integer parameter: it becomes the integer.
Keys are never filled in.

A leaf: it imports nothing of the app but its errors, so that the chart
service, the admin's forms and the `charts_load` command read one definition.
"""

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from imagecache.errors import ChartInvalid

NAME_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
PLACEHOLDER_RE: Final = re.compile(r"\{\{([a-z_][a-z0-9_]{0,31})\}\}")
KINDS: Final = ("string", "integer", "choice")
# The longest value a URL may give a parameter: a device or site name, not a document.
VALUE_MAX: Final = 256
# Query parameters of a chart URL that are not the chart's own.
RESERVED: Final = frozenset({"sig", "exp", "wait"})

Value = str | int


def query_values(lists: Iterable[tuple[str, list[str]]]) -> dict[str, str]:
    """A chart URL's query string (a QueryDict's `lists()`) as one value per
    name: a name given twice is refused, so that what is signed, checked and
    sent to Kentik is the same value. The image route, the chart page, the
    list and the fast path all read it here."""
    given: dict[str, str] = {}
    for name, values in lists:
        if len(values) > 1:
            raise ChartInvalid(name, "is given more than once")
        given[name] = values[0]
    return given


@dataclass(frozen=True)
class Param:
    name: str
    kind: Literal["string", "integer", "choice"]
    pattern: str = ""
    min: int | None = None
    max: int | None = None
    choices: tuple[str, ...] = field(default_factory=tuple)
    default: Value | None = None

    def as_dict(self) -> dict[str, Any]:
        """The declaration as written in a charts file (what `params_parse` reads)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "string":
            out["pattern"] = self.pattern
        elif self.kind == "integer":
            out.update({k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None})
        else:
            out["choices"] = list(self.choices)
        if self.default is not None:
            out["default"] = self.default
        return out


def params_parse(raw: Any) -> list[Param]:
    """The declarations of a chart's `params` (a list of objects); ChartInvalid
    naming the field (`params[1].pattern`) when one does not fit."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ChartInvalid("params", "must be a list of parameters")
    params: list[Param] = []
    for n, item in enumerate(raw):
        where = f"params[{n}]"
        if not isinstance(item, dict):
            raise ChartInvalid(where, "must be an object")
        params.append(_param_parse(where, item))
    names = [param.name for param in params]
    for name in names:
        if names.count(name) > 1:
            raise ChartInvalid("params", f"{name!r} is declared twice")
    return params


_ALLOWED = {
    "string": {"name", "kind", "pattern", "default"},
    "integer": {"name", "kind", "min", "max", "default"},
    "choice": {"name", "kind", "choices", "default"},
}


def _param_parse(where: str, item: dict[str, Any]) -> Param:
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ChartInvalid(f"{where}.name", "must be lower-case letters, digits and '_'")
    if name in RESERVED:
        raise ChartInvalid(f"{where}.name", f"{name!r} is reserved for the URL")
    kind = item.get("kind")
    if kind not in KINDS:
        raise ChartInvalid(f"{where}.kind", f"must be one of {', '.join(KINDS)}")
    unknown = set(item) - _ALLOWED[kind]
    if unknown:
        raise ChartInvalid(f"{where}.{sorted(unknown)[0]}", f"is not a field of a {kind}")
    if kind == "string":
        pattern = item.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ChartInvalid(f"{where}.pattern", "a string parameter needs a pattern")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ChartInvalid(f"{where}.pattern", f"is not a regular expression: {exc}") from None
        param = Param(name, "string", pattern=pattern)
    elif kind == "integer":
        bounds = {key: item.get(key) for key in ("min", "max")}
        for key, bound in bounds.items():
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)):
                raise ChartInvalid(f"{where}.{key}", "must be an integer")
        low, high = bounds["min"], bounds["max"]
        if low is not None and high is not None and low > high:
            raise ChartInvalid(f"{where}.max", "must not be less than min")
        param = Param(name, "integer", min=low, max=high)
    else:
        choices = item.get("choices")
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(c, str) and 0 < len(c) <= VALUE_MAX for c in choices)
        ):
            raise ChartInvalid(f"{where}.choices", "must be a non-empty list of strings")
        param = Param(name, "choice", choices=tuple(choices))
    if "default" in item:
        default = item["default"]
        given = (
            str(default) if isinstance(default, int) and not isinstance(default, bool) else default
        )
        if not isinstance(given, str):
            raise ChartInvalid(f"{where}.default", "must be a string or an integer")
        try:
            checked = _value_check(param, given)
        except ChartInvalid as exc:
            raise ChartInvalid(f"{where}.default", exc.message.partition(": ")[2]) from None
        param = dataclasses.replace(param, default=checked)
    return param


def values_check(params: list[Param], given: Mapping[str, str]) -> dict[str, Value]:
    """The values of a request: each declared parameter's, given or its
    default; ChartInvalid naming the parameter that is undeclared, does not
    fit, or is missing without a default."""
    declared = {param.name for param in params}
    for name in given:
        if name not in declared:
            raise ChartInvalid(name, "is not a parameter of this chart")
    values: dict[str, Value] = {}
    for param in params:
        if param.name in given:
            values[param.name] = _value_check(param, given[param.name])
        elif param.default is not None:
            values[param.name] = param.default
        else:
            raise ChartInvalid(param.name, "is required")
    return values


def _value_check(param: Param, value: str) -> Value:
    if len(value) > VALUE_MAX:
        raise ChartInvalid(param.name, f"is longer than {VALUE_MAX} characters")
    if param.kind == "string":
        if not re.fullmatch(param.pattern, value):
            raise ChartInvalid(param.name, f"does not match {param.pattern}")
        return value
    if param.kind == "choice":
        if value not in param.choices:
            raise ChartInvalid(param.name, f"must be one of {', '.join(param.choices)}")
        return value
    if not re.fullmatch(r"-?[0-9]{1,18}", value):
        raise ChartInvalid(param.name, "must be an integer")
    number = int(value)
    if param.min is not None and number < param.min:
        raise ChartInvalid(param.name, f"must be at least {param.min}")
    if param.max is not None and number > param.max:
        raise ChartInvalid(param.name, f"must be at most {param.max}")
    return number


def placeholders(query: Any) -> set[str]:
    """The names of the placeholders in the query's strings."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, str):
            found.update(PLACEHOLDER_RE.findall(node))
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(query)
    return found


def query_fill(query: Any, values: Mapping[str, Value]) -> Any:
    """A copy of the query with each placeholder of `values` filled in."""
    if isinstance(query, str):
        whole = PLACEHOLDER_RE.fullmatch(query)
        if whole and isinstance(values.get(whole.group(1)), int):
            return values[whole.group(1)]
        return PLACEHOLDER_RE.sub(
            lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), query
        )
    if isinstance(query, dict):
        return {key: query_fill(child, values) for key, child in query.items()}
    if isinstance(query, list):
        return [query_fill(child, values) for child in query]
    return query


def definition_check(query: Any, params: list[Param]) -> None:
    """That every placeholder of the query is a declared parameter, and every
    parameter is used: ChartInvalid naming the one that is not."""
    used = placeholders(query)
    declared = {param.name for param in params}
    for name in sorted(used - declared):
        raise ChartInvalid("query", f"uses {{{{{name}}}}}, which is not a declared parameter")
    for name in sorted(declared - used):
        raise ChartInvalid("params", f"{name!r} is declared but the query never uses it")
