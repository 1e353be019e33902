r"""The sympy side of the reference graders. These functions run only inside the bounded worker processes of
`grpo_ext.protocols.workers`, never in the caller's process.

Each reproduces one tool's own use of sympy:

* `lm_eval_is_equiv`: lm-eval 0.4.13's Minerva `is_equiv` (`lm_eval/tasks/minerva_math/utils.py`);
* `qwen_symbolic_equal`: Qwen2.5-Math's `symbolic_equal` (`evaluation/grader.py`);
* `deepseek_symbolic_equal`: DeepSeek-Math's `symbolic_equal` (`evaluation/eval/eval_utils.py`).

All three read LaTeX with sympy's `parse_latex`, whose ANTLR grammar needs antlr4-python3-runtime 4.11 (what
the three tools require, and what pyproject pins through math-verify's `antlr4_11_0` extra). Where Qwen's and
DeepSeek's graders then try sympy's `parse_expr`, which is `eval` underneath, `literal_parse_expr` reads the
same Python literal arithmetic without evaluating any text. Their time bounds (lm-eval's SIGALRM, the others'
process pools) are the worker's deadline.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

__all__ = [
    "deepseek_symbolic_equal",
    "latex_parser_available",
    "lm_eval_is_equiv",
    "literal_parse_expr",
    "qwen_symbolic_equal",
]


def latex_parser_available() -> str | None:
    """None when sympy's `parse_latex` can run here, else why not (it refuses any antlr4 runtime but 4.11)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        runtime = version("antlr4-python3-runtime")
    except PackageNotFoundError:
        return "antlr4-python3-runtime is not installed"
    if not runtime.startswith("4.11"):
        return f"antlr4-python3-runtime is {runtime}"
    return None


# --------------------------------------------------------------------------------------------------------------------
# parse_expr without eval
# --------------------------------------------------------------------------------------------------------------------

_NAMES: dict[str, Any] | None = None


def _parse_expr_names() -> dict[str, Any]:
    """The names `parse_expr` evaluates in by default (sympy_parser.py `parse_expr`): `from sympy import *`, the
    builtin functions, and `max`/`min` bound to `Max`/`Min`."""
    global _NAMES
    if _NAMES is None:
        import builtins
        import types

        import sympy

        names = {name: getattr(sympy, name) for name in sympy.__all__}
        names.update({n: obj for n, obj in vars(builtins).items() if isinstance(obj, types.BuiltinFunctionType)})
        names["max"], names["min"] = sympy.Max, sympy.Min
        _NAMES = names
    return _NAMES


def _name(name: str) -> Any:
    """sympy_parser.py `auto_symbol`: a name bound in parse_expr's namespace to a sympy object, a class or a
    callable stands for that object; any other name becomes `Symbol(name)`."""
    import sympy
    from sympy.assumptions.ask import AssumptionKeys

    obj = _parse_expr_names().get(name)
    if obj is not None and (isinstance(obj, (AssumptionKeys, sympy.Basic, type)) or callable(obj)):
        return obj
    return sympy.Symbol(name)


_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow, ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
}  # fmt: skip
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Invert: operator.invert, ast.Not: operator.not_}
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}  # fmt: skip


def _number(node: ast.Constant, source: str) -> Any:
    """sympy_parser.py `auto_number`: a literal with `.` or an exponent is `Float(text)`, any other `Integer`; a
    `j` suffix multiplies by `I`."""
    import sympy

    text = ast.get_source_segment(source, node) or ""
    if "_" in text:
        raise ValueError("digit separators are not read")
    imaginary = text[-1:] in ("j", "J")
    body = text[:-1] if imaginary else text
    is_float = "." in body or (("e" in body or "E" in body) and not body.lower().startswith("0x"))
    value = sympy.Float(body) if is_float else sympy.Integer(int(body, 0) if body[:2].lower() in ("0x", "0o", "0b")
                                                                  else int(body))  # fmt: skip
    return value * sympy.I if imaginary else value


def _build(node: ast.AST, source: str) -> Any:
    """The value `parse_expr` would give the expression `node`, built from sympy objects and Python containers by
    applying the same operators; anything else (calls, attributes, subscripts, lambdas, comprehensions) raises."""
    if isinstance(node, ast.Expression):
        return _build(node.body, source)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or node.value is None or node.value is Ellipsis or isinstance(node.value, str):
            return node.value
        if isinstance(node.value, (int, float, complex)):
            return _number(node, source)
    elif isinstance(node, ast.Name):
        return _name(node.id)
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_build(node.left, source), _build(node.right, source))
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_build(node.operand, source))
    elif isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _build(node.left, source)
        for op, right_node in zip(node.ops, node.comparators):  # Python's chained comparison: a < b and b < c
            right = _build(right_node, source)
            result = _COMPARE[type(op)](left, right)
            if right_node is node.comparators[-1] or not result:
                return result
            left = right
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_build(item, source) for item in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    elif isinstance(node, ast.Dict) and None not in node.keys:
        return {_build(k, source): _build(v, source) for k, v in zip(node.keys, node.values)}
    raise ValueError(f"not literal arithmetic: {type(node).__name__}")


def literal_parse_expr(text: str) -> Any:
    """sympy's `parse_expr(text)` (standard transformations, evaluate=True) for Python literal arithmetic, without
    `eval`: numbers become `Integer`/`Float`, names sympy's objects or `Symbol`s, and the operators + - * / // % **
    ^ & | << >>, comparisons, tuples, lists, sets and dicts are applied to them as `eval` would. Raises where
    `parse_expr` raises (a syntax error: `2x`, `\\frac{1}{2}`), and also on what it would read but this does not
    evaluate: calls (`f(1, 2)`), attributes, subscripts and repeated decimals (`0.[3]`), `5!`, lambdas.

    Where Qwen2.5-Math's and DeepSeek-Math's graders try `parse_expr` (after sympy's `parse_latex` failed), this
    stands in for it: in practice on comma lists (`1,-2` -> a tuple) and brace sets (`{1,2}` -> a set)."""
    source = text.strip()
    return _build(ast.parse(source, mode="eval"), source)


# --------------------------------------------------------------------------------------------------------------------
# The graders' sympy comparisons
# --------------------------------------------------------------------------------------------------------------------


def _parse_latex(text: str) -> Any:
    from sympy.parsing.latex import parse_latex

    return parse_latex(text)


def lm_eval_is_equiv(x1: str, x2: str) -> bool:
    """lm-eval 0.4.13 `tasks/minerva_math/utils.py` `is_equiv` on two normalised answers: equal when identical
    and non-empty; otherwise both are read by sympy's `parse_latex` and equal when `simplify(a - b) == 0`. A side
    that does not parse, a difference that cannot be formed or simplified, or any other error is not equal; a
    missing LaTeX parser (ImportError) is raised, as lm-eval raises it. Its 5-second SIGALRM is the worker's
    deadline."""
    if isinstance(x1, str) and x1 and x1 == x2:
        return True
    import sympy

    try:
        parsed_x1, parsed_x2 = _parse_latex(x1), _parse_latex(x2)
        return bool(sympy.simplify(parsed_x1 - parsed_x2) == 0)
    except ImportError:
        raise
    except Exception:  # lm-eval catches parse, subtraction and simplify errors alike: not equal
        return False


def _first_parse(text: str, parsers, unescape: bool) -> Any:
    """The first parser's reading of `text` that does not raise, trying `text` with `\\\\` read as `\\` first
    when `unescape`; `text` itself when none reads it (both graders' `_parse`)."""
    for parse in parsers:
        for candidate in ((text.replace("\\\\", "\\"), text) if unescape else (text,)):
            try:
                return parse(candidate)
            except Exception:
                continue
    return text


def _latex2sympy(text: str) -> Any:
    """Qwen's third reader is its bundled ZubinGou/latex2sympy2 1.9.0, which is not on PyPI; math-verify's
    latex2sympy2_extended (a descendant of the same code) stands in, with its own normalisation off."""
    from latex2sympy2_extended import latex2sympy

    return latex2sympy(text, normalization_config=None)


def qwen_symbolic_equal(a: str, b: str) -> bool:
    """Qwen2.5-Math `evaluation/grader.py` `symbolic_equal`: each side read by the first of sympy's `parse_latex`,
    `parse_expr` (`literal_parse_expr`) and latex2sympy that accepts it (with `\\\\` read as `\\` first), else
    kept as text; then equal when their strings or values are equal, when `a.equals(b)` or `simplify(a - b) == 0`,
    when both are equations with equal `|lhs - rhs|`, when their numeric values agree to a relative 1e-4, or when
    both are matrices of one shape equal after rounding entries to 3 places. Errors in any test skip it."""
    from sympy import N, simplify

    a = _first_parse(a, (_parse_latex, literal_parse_expr, _latex2sympy), unescape=True)
    b = _first_parse(b, (_parse_latex, literal_parse_expr, _latex2sympy), unescape=True)
    tests = (
        lambda: str(a) == str(b) or a == b,
        lambda: a.equals(b) or simplify(a - b) == 0,
        lambda: abs(a.lhs - a.rhs).equals(abs(b.lhs - b.rhs)),
        lambda: math.isclose(float(N(b)), float(N(a)), rel_tol=1e-4),  # grader.py numeric_equal(pred, ref)
        lambda: a.shape == b.shape and a.applyfunc(lambda x: round(x, 3)).equals(b.applyfunc(lambda x: round(x, 3))),
    )
    return any(_holds(test) for test in tests)


def deepseek_symbolic_equal(a: str, b: str) -> bool:
    """DeepSeek-Math `evaluation/eval/eval_utils.py` `symbolic_equal`: each side read by sympy's `parse_latex`,
    else `parse_expr` (`literal_parse_expr`), else kept as text; equal when `simplify(a - b) == 0` or when their
    numeric values agree to an absolute 1e-3 (`isclose(N(a), N(b), abs_tol=1e-3)`). Errors skip a test."""
    from sympy import N, simplify

    a = _first_parse(a, (_parse_latex, literal_parse_expr), unescape=False)
    b = _first_parse(b, (_parse_latex, literal_parse_expr), unescape=False)
    return _holds(lambda: simplify(a - b) == 0) or _holds(lambda: math.isclose(N(a), N(b), abs_tol=1e-3))


def _holds(test) -> bool:
    """A grader's `try: if test(): return True except: pass`: True only when the test runs and is truthy."""
    try:
        return bool(test())
    except Exception:
        return False
