"""Mutants of one Python file: each is one small fault, made by rewriting the text of one node.

Every byte outside the rewritten node is kept, and a node that spanned several lines is
padded with newlines, so line numbers stay those of the original. Each mutant must compile
and differ from the original and from every other mutant (compared as syntax trees);
anything else is dropped.

Not mutated: docstrings, logging calls, type annotations, decorators, imports and f-strings
(messages).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import re
from collections.abc import Iterator

# Boundaries moved and equalities negated: the faults a missing edge-case test lets through.
_COMPARISONS = {
    ast.Lt: [ast.LtE], ast.LtE: [ast.Lt], ast.Gt: [ast.GtE], ast.GtE: [ast.Gt],
    ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.Is: [ast.IsNot], ast.IsNot: [ast.Is],
    ast.In: [ast.NotIn], ast.NotIn: [ast.In],
}
_ARITHMETIC = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult, ast.Div: ast.Mult,
}
_BOOLEAN = {ast.And: ast.Or, ast.Or: ast.And}
_SWAPPED_CALLS = {"max": "min", "min": "max"}
# A string that names something (a JSON field, an event, a mode); sentences are messages.
_NAME_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_LOGGERS = {"log", "logger", "logging"}
_LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


@dataclasses.dataclass(frozen=True, slots=True)
class Mutant:
    path: str  # relative to the checkout
    line: int
    column: int  # 1-based
    operator: str
    original: str  # the rewritten node's text, on one line
    mutated: str  # what replaced it
    source: str  # the whole mutated file

    def describe(self) -> str:
        return f"{self.path}:{self.line}: {_short(self.original)} -> {_short(self.mutated)}"


def mutants(path: str, source: str) -> list[Mutant]:
    """Every mutant of ``source`` (the text of ``path``), in source order."""
    tree = ast.parse(source)
    text = _Text(source)
    skipped = _skipped_nodes(tree)
    seen = {ast.dump(tree)}
    found = []
    candidates = sorted(_candidates(tree, skipped), key=lambda c: (c[0].lineno, c[0].col_offset))
    for node, operator, replacement, shown in candidates:
        mutated = text.replace(node, replacement)
        if mutated is None:
            continue
        fingerprint = ast.dump(ast.parse(mutated))
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        found.append(Mutant(path, node.lineno, node.col_offset + 1, operator, _one_line(text.segment(node)),
                            shown, mutated))
    return found


def _candidates(tree: ast.Module, skipped: set[int]) -> Iterator[tuple[ast.AST, str, str, str]]:
    """(node, operator, replacement text, replacement as shown) for every fault to try."""
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _removed_statements(node, skipped)
        if isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant) and node.arg:
            # Shown and rewritten as the whole argument: "final=True -> final=False".
            for operator, changed in _constant_changes(node.value.value):
                shown = ast.unparse(ast.keyword(arg=node.arg, value=changed))
                yield node, operator, shown, shown
            skipped.add(id(node.value))
            continue
        for operator, changed in _changes(node):
            shown = ast.unparse(changed)
            if isinstance(node, ast.stmt):
                yield node, operator, shown, shown
            else:  # parenthesised: the node may sit inside an operator of higher precedence
                yield node, operator, f"({shown})", shown
        if isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
            yield node.value, "return None", "None", "None"


def _changes(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    if isinstance(node, ast.Compare):
        for index, op in enumerate(node.ops):
            for other in _COMPARISONS.get(type(op), []):
                changed = copy.deepcopy(node)
                changed.ops[index] = other()
                yield "comparison", changed
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _ARITHMETIC:
        changed = copy.deepcopy(node)
        changed.op = _ARITHMETIC[type(node.op)]()
        yield "arithmetic", changed
    elif isinstance(node, ast.BoolOp):
        yield "and/or", ast.BoolOp(op=_BOOLEAN[type(node.op)](), values=node.values)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not removed", node.operand
    elif isinstance(node, ast.Constant):
        yield from _constant_changes(node.value)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in _SWAPPED_CALLS:
            changed = copy.deepcopy(node)
            changed.func.id = _SWAPPED_CALLS[node.func.id]
            yield "max/min", changed
        elif node.func.id == "sorted" and not any(k.arg == "reverse" for k in node.keywords):
            changed = copy.deepcopy(node)
            changed.keywords.append(ast.keyword(arg="reverse", value=ast.Constant(True)))
            yield "sorted reversed", changed
    elif isinstance(node, ast.Tuple) and isinstance(node.ctx, ast.Load):
        for index in range(len(node.elts)):
            yield "tuple element removed", ast.Tuple(elts=node.elts[:index] + node.elts[index + 1:], ctx=ast.Load())


def _constant_changes(value: object) -> Iterator[tuple[str, ast.AST]]:
    if isinstance(value, bool):
        yield "boolean", ast.Constant(not value)
    elif isinstance(value, int):
        for other in dict.fromkeys([value + 1, value - 1, 0]):
            if other != value:
                yield "integer", ast.Constant(other)
    elif isinstance(value, str) and _NAME_LIKE.fullmatch(value) and len(value) <= 60:
        yield "string", ast.Constant(f"XX{value}XX")


def _removed_statements(function: ast.FunctionDef | ast.AsyncFunctionDef, skipped: set[int]):
    """Each simple statement of the function, at any depth (not in nested definitions), as ``pass``.

    Compound statements are not removed whole (removing each statement inside covers them),
    nor a ``return`` the function would otherwise fall off the end after: that is the
    ``return None`` mutant again.
    """
    blocks = [(function.body, True)]  # (statements, whether its last one ends the function)
    while blocks:
        block, ends_function = blocks.pop()
        for position, statement in enumerate(block):
            last = ends_function and position == len(block) - 1
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if _is_compound(statement):
                # Only a branch's last statement can fall off the end; a loop's goes round again.
                falls_through = last and isinstance(statement, (ast.If, ast.With, ast.AsyncWith))
                blocks.extend((inner, falls_through) for inner in _blocks(statement))
                continue
            if id(statement) in skipped or isinstance(statement, (ast.Pass, ast.Global, ast.Nonlocal)):
                continue
            if isinstance(statement, ast.Expr) and id(statement.value) in skipped:  # a logging call
                continue
            if isinstance(statement, ast.Return) and last:
                continue
            yield statement, "statement removed", "pass", "pass"


def _is_compound(statement: ast.stmt) -> bool:
    return any(True for _ in _blocks(statement))


def _blocks(statement: ast.stmt) -> Iterator[list[ast.stmt]]:
    for field in ("body", "orelse", "finalbody"):
        block = getattr(statement, field, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            yield block
    for part in getattr(statement, "handlers", []) + getattr(statement, "cases", []):
        yield part.body


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """Ids of the nodes never mutated: docstrings, annotations, decorators, imports, f-strings, logging."""
    skipped: set[int] = set()

    def skip(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(id(inner) for inner in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                skip(first)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:  # class and function set-up, not logic
                skip(decorator)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip(node.returns)
        elif isinstance(node, ast.arg):
            skip(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        elif isinstance(node, (ast.Import, ast.ImportFrom, ast.JoinedStr)):
            skip(node)
        elif _is_logging_call(node):
            skip(node)
    return skipped


def _is_logging_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _LOG_METHODS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in _LOGGERS
    )


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


class _Text:
    """The source as bytes: ast's column offsets count UTF-8 bytes, not characters."""

    def __init__(self, source: str):
        self.data = source.encode()
        self.line_starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))

    def _span(self, node: ast.AST) -> tuple[int, int]:
        start = self.line_starts[node.lineno - 1] + node.col_offset
        return start, self.line_starts[node.end_lineno - 1] + node.end_col_offset

    def segment(self, node: ast.AST) -> str:
        start, end = self._span(node)
        return self.data[start:end].decode()

    def replace(self, node: ast.AST, replacement: str) -> str | None:
        """The source with ``node`` rewritten, or None if that does not compile."""
        start, end = self._span(node)
        padding = "\n" * (node.end_lineno - node.lineno)  # keeps the line numbers below
        for text in dict.fromkeys([replacement + padding, replacement]):
            source = (self.data[:start] + text.encode() + self.data[end:]).decode()
            try:
                compile(source, "<mutant>", "exec", dont_inherit=True)
            except SyntaxError:
                continue
            return source
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
