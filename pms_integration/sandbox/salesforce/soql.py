"""SOQL, the common subset: the parser, the checks of a condition against its field, and matching.

SELECT fields (relationship fields such as ``Who.Name`` too) or ``COUNT()``, FROM one object,
WHERE with AND / OR / NOT and parentheses, ``=, !=, <, <=, >, >=, LIKE, IN, NOT IN``, date
literals (``TODAY``, ``LAST_N_DAYS:n``, ...), ORDER BY, LIMIT and OFFSET.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from typing import Any

import attrs

from .validation import FieldSpec, OrgError, id15, parse_datetime, valid_id

QUERY_BATCH = 2000  # records per query page, as the REST API answers by default

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|=|<|>)|(?P<comma>,)"
    r"|(?P<lp>\()|(?P<rp>\))|(?P<colon>:)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)|(?P<bad>\S))"
)
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_LIT_PERCENT, _LIT_UNDERSCORE = "\x01", "\x02"

#: date literals without a number, and those that take one (``LAST_N_DAYS:7``)
DATE_LITERALS = frozenset(
    {
        "YESTERDAY", "TODAY", "TOMORROW", "LAST_WEEK", "THIS_WEEK", "NEXT_WEEK", "LAST_MONTH",
        "THIS_MONTH", "NEXT_MONTH", "LAST_90_DAYS", "NEXT_90_DAYS", "THIS_YEAR", "LAST_YEAR", "NEXT_YEAR",
    }
)  # fmt: skip
DATE_LITERALS_N = frozenset(
    {"LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO", "LAST_N_WEEKS", "NEXT_N_WEEKS", "LAST_N_MONTHS", "NEXT_N_MONTHS"}
)


class SoqlError(OrgError):
    """A query the org refuses (always a ``400``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


@attrs.frozen
class Cond:
    field: str
    op: str  # =, !=, <, <=, >, >=, LIKE, IN, NOT IN
    kind: str  # str, dt, date, num, bool, null, range (a date literal), list (IN)
    value: Any


@attrs.frozen
class Bool:
    op: str  # AND, OR, NOT
    items: tuple[Cond | Bool, ...]


@attrs.frozen
class Query:
    sobject: str
    fields: list[str]
    where: Cond | Bool | None
    order: list[tuple[str, bool, bool]]  # (field, descending, nulls last)
    limit: int | None
    offset: int | None = None
    count: str | None = None  # "COUNT()" or the field of COUNT(field)


def _unquote(literal: str) -> str:
    out = []
    i = 1
    while i < len(literal) - 1:
        c = literal[i]
        if c == "\\":
            nxt = literal[i + 1]
            if nxt == "%":
                out.append(_LIT_PERCENT)
            elif nxt == "_":
                out.append(_LIT_UNDERSCORE)
            elif nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            else:
                raise SoqlError(
                    "MALFORMED_QUERY", f"Invalid string literal '{literal}'. Illegal character sequence '\\{nxt}'"
                )
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokens(soql: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(soql):
        m = _TOKEN.match(soql, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        kind = m.lastgroup or "bad"
        text = m.group(kind)
        if kind == "bad":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{text}'")
        out.append((kind, text))
    return out


def conditions(node: Cond | Bool | None) -> list[Cond]:
    """The conditions of a WHERE tree, left to right."""
    if node is None:
        return []
    if isinstance(node, Cond):
        return [node]
    return [c for item in node.items for c in conditions(item)]


def parse_soql(soql: str) -> Query:
    """Parse the supported SOQL; raises ``SoqlError`` like the org would."""
    toks = _tokens(soql)
    i = 0

    def peek(offset: int = 0) -> tuple[str, str]:
        return toks[i + offset] if i + offset < len(toks) else ("end", "")

    def fail() -> SoqlError:
        return SoqlError("MALFORMED_QUERY", f"unexpected token: '{peek()[1] or '<EOF>'}'")

    def is_word(*words: str, offset: int = 0) -> bool:
        kind, text = peek(offset)
        return kind == "word" and text.upper() in words

    def take(kind: str) -> str:
        nonlocal i
        if peek()[0] != kind:
            raise fail()
        i += 1
        return toks[i - 1][1]

    def take_word(*words: str) -> str:
        if words and not is_word(*words):
            raise fail()
        return take("word")

    def literal() -> tuple[str, Any]:
        nonlocal i
        vkind, vtext = peek()
        i += 1
        if vkind == "str":
            return "str", _unquote(vtext)
        if vkind == "dt":
            parsed = parse_datetime(vtext)
            if parsed is None:
                raise SoqlError("MALFORMED_QUERY", f"line 1: invalid date-time literal {vtext}")
            return "dt", parsed
        if vkind == "date":
            try:
                return "date", _dt.date.fromisoformat(vtext)
            except ValueError:
                raise SoqlError("MALFORMED_QUERY", f"line 1: invalid date literal {vtext}") from None
        if vkind == "num":
            return "num", float(vtext)
        if vkind == "word" and vtext.lower() in ("true", "false"):
            return "bool", vtext.lower() == "true"
        if vkind == "word" and vtext.lower() == "null":
            return "null", None
        if vkind == "word" and vtext.upper() in DATE_LITERALS:
            return "range", (vtext.upper(), 0)
        if vkind == "word" and vtext.upper() in DATE_LITERALS_N:
            take("colon")
            number = take("num")
            if not number.isdigit():
                raise SoqlError("MALFORMED_QUERY", f"invalid integer for {vtext.upper()}: {number}")
            return "range", (vtext.upper(), int(number))
        i -= 1
        raise fail()

    def condition() -> Cond:
        nonlocal i
        field = take_word()
        if is_word("NOT") and is_word("IN", offset=1):
            i += 2
            op = "NOT IN"
        elif is_word("IN", "LIKE"):
            op = take_word().upper()
        elif peek()[0] == "op":
            op = take("op")
        else:
            raise fail()
        if op in ("IN", "NOT IN"):
            take("lp")
            values = [literal()]
            while peek()[0] == "comma":
                i += 1
                values.append(literal())
            take("rp")
            return Cond(field, op, "list", tuple(values))
        kind, value = literal()
        return Cond(field, op, kind, value)

    def unary() -> Cond | Bool:
        nonlocal i
        if is_word("NOT") and not is_word("IN", offset=1):
            i += 1
            return Bool("NOT", (unary(),))
        if peek()[0] == "lp":
            i += 1
            inner = expression()
            take("rp")
            return inner
        return condition()

    def expression() -> Cond | Bool:
        nonlocal i
        items = [unary()]
        joiner: str | None = None
        while is_word("AND", "OR"):
            word = peek()[1].upper()
            if joiner is not None and word != joiner:
                # SOQL needs parentheses to mix AND and OR
                raise fail()
            joiner = word
            i += 1
            items.append(unary())
        return items[0] if joiner is None else Bool(joiner, tuple(items))

    take_word("SELECT")
    count: str | None = None
    fields: list[str] = []
    if is_word("COUNT") and peek(1)[0] == "lp":
        i += 2
        count = "COUNT()" if peek()[0] == "rp" else take_word()
        take("rp")
    else:
        fields.append(take_word())
        while peek()[0] == "comma":
            i += 1
            fields.append(take_word())
    take_word("FROM")
    sobject = take_word()
    where: Cond | Bool | None = None
    order: list[tuple[str, bool, bool]] = []
    limit: int | None = None
    offset: int | None = None
    if is_word("WHERE"):
        i += 1
        where = expression()
    if is_word("ORDER"):
        i += 1
        take_word("BY")
        while True:
            field = take_word()
            descending = False
            if is_word("ASC", "DESC"):
                descending = take_word().upper() == "DESC"
            nulls_last = descending  # Salesforce: nulls first ascending, last descending
            if is_word("NULLS"):
                i += 1
                nulls_last = take_word("FIRST", "LAST").upper() == "LAST"
            order.append((field, descending, nulls_last))
            if peek()[0] != "comma":
                break
            i += 1
    for keyword in ("LIMIT", "OFFSET"):
        if is_word(keyword):
            i += 1
            number = take("num")
            if not number.isdigit():
                raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{number}'")
            if keyword == "LIMIT":
                limit = int(number)
            else:
                offset = int(number)
    if i != len(toks):
        raise fail()
    if offset is not None and offset > 2000:
        raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is 2000, not {offset}")
    return Query(sobject, fields, where, order, limit, offset, count)


# ---------------------------------------------------------------------------------------------
# checking a condition against its field


def check_condition(spec: FieldSpec, cond: Cond) -> None:
    """Refuse what the org refuses in a WHERE condition on a field of ``spec``."""
    if not spec.filterable:
        raise SoqlError("INVALID_FIELD", f"field '{cond.field}' can not be filtered in a query call")
    values = cond.value if cond.kind == "list" else ((cond.kind, cond.value),)
    for kind, value in values:
        _check_value(spec, cond.field, cond.op, kind, value)


def _check_value(spec: FieldSpec, field: str, op: str, kind: str, value: Any) -> None:
    if kind == "null":
        if op not in ("=", "!=", "IN", "NOT IN"):
            raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on null for {field}")
        return
    expected = {"datetime": "dt", "date": "date", "int": "num", "bool": "bool"}.get(spec.kind, "str")
    wrong_type = SoqlError(
        "INVALID_FIELD", f"value of filter criterion for field '{field}' must be of the field's type"
    )
    if kind == "range":
        if expected not in ("dt", "date") or op in ("LIKE", "IN", "NOT IN"):
            raise wrong_type
        return
    if kind != expected:
        if expected in ("dt", "date") and kind == "str":
            type_name = "dateTime" if expected == "dt" else "date"
            raise SoqlError(
                "INVALID_FIELD",
                f"value of filter criterion for field '{field}' must be of type {type_name} "
                "and should not be enclosed in quotes",
            )
        raise wrong_type
    if op == "LIKE" and expected != "str":
        raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on field '{field}': LIKE")
    if spec.kind == "reference" and op != "LIKE" and not valid_id(_plain(value)):
        raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {_plain(value)}")


# ---------------------------------------------------------------------------------------------
# matching

#: a field path resolved on an object: its canonical spelling, its spec and a record's value of it
Column = tuple[str, FieldSpec, Callable[[dict[str, Any]], Any]]


def holds(node: Cond | Bool, record: dict[str, Any], columns: dict[str, Column], today: _dt.date) -> bool:
    """Whether ``record`` satisfies a WHERE tree whose field paths ``columns`` resolves."""
    if isinstance(node, Bool):
        if node.op == "NOT":
            return not holds(node.items[0], record, columns, today)
        results = (holds(item, record, columns, today) for item in node.items)
        return all(results) if node.op == "AND" else any(results)
    _, spec, getter = columns[node.field]
    actual = getter(record)
    if node.kind == "list":
        found = any(matches(spec, "=", kind, value, actual, today) for kind, value in node.value)
        return found if node.op == "IN" else not found
    return matches(spec, node.op, node.kind, node.value, actual, today)


def matches(spec: FieldSpec, op: str, kind: str, value: Any, actual: Any, today: _dt.date) -> bool:
    """Whether a record's ``actual`` value satisfies ``actual <op> value``, as SOQL compares."""
    if kind == "null":
        return (actual is None) == (op == "=")
    if op == "LIKE":
        return isinstance(actual, str) and bool(_like(value).fullmatch(actual))
    if kind == "range":
        first, end = date_literal_range(value[0], value[1], today)
        if actual is None:
            return op == "!="
        low: Any = first
        high: Any = end
        if spec.kind == "datetime":
            low = _dt.datetime(first.year, first.month, first.day, tzinfo=_dt.timezone.utc)
            high = _dt.datetime(end.year, end.month, end.day, tzinfo=_dt.timezone.utc)
        inside = bool(low <= actual < high)
        return {
            "=": inside,
            "!=": not inside,
            "<": bool(actual < low),
            "<=": bool(actual < high),
            ">": bool(actual >= high),
            ">=": bool(actual >= low),
        }[op]
    if kind == "str":
        text = _plain(value)
        if spec.kind == "reference":
            return _compare(op, id15(actual) if actual else None, id15(text))
        # SOQL text comparisons ignore case.
        return _compare(op, actual.lower() if isinstance(actual, str) else None, text.lower())
    return _compare(op, actual, value)


def sort_key(value: Any) -> Any:
    """ORDER BY: text ignores case; other values compare as they are."""
    return value.lower() if isinstance(value, str) else value


def _like(pattern: str) -> re.Pattern[str]:
    out = []
    for c in pattern:
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        elif c == _LIT_PERCENT:
            out.append("%")
        elif c == _LIT_UNDERSCORE:
            out.append("_")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _plain(text: str) -> str:
    return text.replace(_LIT_PERCENT, "%").replace(_LIT_UNDERSCORE, "_")


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])
    except TypeError:
        return False


def _month_start(day: _dt.date, months: int) -> _dt.date:
    total = day.year * 12 + day.month - 1 + months
    return _dt.date(total // 12, total % 12 + 1, 1)


def date_literal_range(name: str, n: int, today: _dt.date) -> tuple[_dt.date, _dt.date]:
    """The days a date literal covers, as ``[first, end)`` (the org's zone is UTC here)."""
    day = _dt.timedelta(days=1)
    week = today - _dt.timedelta(days=(today.weekday() + 1) % 7)  # weeks start on Sunday
    month = _month_start(today, 0)
    year = _dt.date(today.year, 1, 1)
    fixed = {
        "YESTERDAY": (today - day, today),
        "TODAY": (today, today + day),
        "TOMORROW": (today + day, today + 2 * day),
        "LAST_WEEK": (week - 7 * day, week),
        "THIS_WEEK": (week, week + 7 * day),
        "NEXT_WEEK": (week + 7 * day, week + 14 * day),
        "LAST_MONTH": (_month_start(today, -1), month),
        "THIS_MONTH": (month, _month_start(today, 1)),
        "NEXT_MONTH": (_month_start(today, 1), _month_start(today, 2)),
        "LAST_90_DAYS": (today - 90 * day, today + day),
        "NEXT_90_DAYS": (today + day, today + 91 * day),
        "THIS_YEAR": (year, _dt.date(today.year + 1, 1, 1)),
        "LAST_YEAR": (_dt.date(today.year - 1, 1, 1), year),
        "NEXT_YEAR": (_dt.date(today.year + 1, 1, 1), _dt.date(today.year + 2, 1, 1)),
    }
    if name in fixed:
        return fixed[name]
    counted = {
        "LAST_N_DAYS": (today - n * day, today + day),
        "NEXT_N_DAYS": (today + day, today + (n + 1) * day),
        "N_DAYS_AGO": (today - n * day, today - (n - 1) * day),
        "LAST_N_WEEKS": (week - 7 * n * day, week),
        "NEXT_N_WEEKS": (week + 7 * day, week + 7 * (n + 1) * day),
        "LAST_N_MONTHS": (_month_start(today, -n), month),
        "NEXT_N_MONTHS": (_month_start(today, 1), _month_start(today, n + 1)),
    }
    return counted[name]
