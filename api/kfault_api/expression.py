"""A Workflow Task's conditionalBranches expressions: a small, safe language (no eval).

Chaos Mesh evaluates them with expr-lang over {exitCode, stdout}; kfault supports this subset,
parsed and type-checked when the Workflow is validated, so a mistake is a validation error naming
the expression, not a branch that silently never runs:

    expression := or
    or         := and ( "||" and )*
    and        := not ( "&&" not )*
    not        := "!" not | compare
    compare    := operand ( ("==" | "!=" | "<" | "<=" | ">" | ">=") operand )?
    operand    := "(" expression ")" | STRING | INTEGER | "true" | "false" | "exitCode" | "stdout"

STRING is double- or single-quoted with backslash escapes (\\" \\' \\\\ \\n \\t); INTEGER is
decimal, optionally negative. exitCode is an integer (the container's exit code), stdout a
string: the container's log with whitespace at both ends trimmed, as Chaos Mesh does
(`echo branch-a` gives stdout == "branch-a"). == and != compare values of one type; < <= > >=
integers only; && || ! take booleans; the whole expression must be a boolean.
"""
import re
from dataclasses import dataclass

VARIABLES = {"exitCode": int, "stdout": str}
_TOKEN = re.compile(r"""\s*(?:(?P<op>==|!=|<=|>=|&&|\|\||[<>!()])|(?P<int>-?[0-9]+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)
                        |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'))""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
_TYPE_NAMES = {int: "an integer", str: "a string", bool: "a boolean"}


class ExpressionError(ValueError):
    """What is wrong, and where (a character offset into the expression)."""


@dataclass(frozen=True)
class Expression:
    text: str
    tree: tuple          # ("lit", value) | ("var", name) | ("not", x) | (op, left, right)

    def evaluate(self, exit_code, stdout):
        """True or False for this exit code and stdout (already trimmed: see trimmed_stdout)."""
        return _evaluate(self.tree, {"exitCode": exit_code, "stdout": stdout})


def trimmed_stdout(log):
    """A Task's stdout as expressions see it: whitespace at both ends trimmed (Chaos Mesh's TrimSpace)."""
    return log.strip()


def parse(text):
    """text -> Expression; ExpressionError says what is wrong and what is allowed."""
    tokens = _tokens(text)
    parser = _Parser(text, tokens)
    tree, kind = parser.expression()
    if parser.position < len(tokens):
        raise ExpressionError(f"unexpected {tokens[parser.position][1]!r} at character {tokens[parser.position][2]}")
    if kind is not bool:
        raise ExpressionError(f"the expression is {_TYPE_NAMES[kind]}, not a condition: compare it, "
                              "e.g. exitCode == 0")
    return Expression(text, tree)


def _tokens(text):
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        found = _TOKEN.match(text, position)
        if not found:
            raise ExpressionError(f"unexpected {text[position:].lstrip()[:10]!r} at character {position}: use "
                                  "== != < <= > >= && || ! ( ), \"strings\", integers, exitCode and stdout")
        kind = found.lastgroup
        start = found.start(kind)
        tokens.append((kind, found.group(kind), start))
        position = found.end()
    return tokens


def _unquote(literal):
    body, out, index = literal[1:-1], [], 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            escaped = body[index + 1]
            if escaped not in _ESCAPES:
                raise ExpressionError(f"unknown escape \\{escaped} in {literal}: use \\\" \\' \\\\ \\n \\t")
            out.append(_ESCAPES[escaped])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


class _Parser:
    """Recursive descent over the grammar above; each rule returns (tree, type)."""

    def __init__(self, text, tokens):
        self.text, self.tokens, self.position = text, tokens, 0

    def peek(self):
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self):
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expect_boolean(self, kind, operator):
        if kind is not bool:
            raise ExpressionError(f"{operator} takes conditions, not {_TYPE_NAMES[kind]}: compare first, "
                                  "e.g. exitCode == 0")

    def expression(self):
        return self.binary("||", self.conjunction)

    def conjunction(self):
        return self.binary("&&", self.negation)

    def binary(self, operator, operand):
        tree, kind = operand()
        while self.peek() == operator:
            self.take()
            right, right_kind = operand()
            self.expect_boolean(kind, operator)
            self.expect_boolean(right_kind, operator)
            tree, kind = (operator, tree, right), bool
        return tree, kind

    def negation(self):
        if self.peek() == "!":
            self.take()
            tree, kind = self.negation()
            self.expect_boolean(kind, "!")
            return ("!", tree), bool
        return self.comparison()

    def comparison(self):
        left, kind = self.operand()
        if self.peek() in ("==", "!=", "<", "<=", ">", ">="):
            operator = self.take()[1]
            right, right_kind = self.operand()
            if kind is not right_kind:
                raise ExpressionError(f"{operator} compares {_TYPE_NAMES[kind]} with {_TYPE_NAMES[right_kind]}: "
                                      "compare exitCode with integers and stdout with strings")
            if operator not in ("==", "!=") and kind is not int:
                raise ExpressionError(f"{operator} compares integers (exitCode), not {_TYPE_NAMES[kind]}")
            return (operator, left, right), bool
        return left, kind

    def operand(self):
        if self.position >= len(self.tokens):
            raise ExpressionError("the expression ends too early: an operand (exitCode, stdout, a string, an "
                                  "integer or a parenthesis) is missing")
        kind, value, start = self.take()
        if value == "(" and kind == "op":
            tree, inner = self.expression()
            if self.peek() != ")":
                raise ExpressionError(f"the parenthesis at character {start} is never closed")
            self.take()
            return tree, inner
        if kind == "int":
            return ("lit", int(value)), int
        if kind == "str":
            return ("lit", _unquote(value)), str
        if kind == "name" and value in ("true", "false"):
            return ("lit", value == "true"), bool
        if kind == "name" and value in VARIABLES:
            return ("var", value), VARIABLES[value]
        if kind == "name":
            raise ExpressionError(f"unknown name {value!r} at character {start}: only exitCode and stdout")
        raise ExpressionError(f"unexpected {value!r} at character {start}")


def _evaluate(tree, env):
    head = tree[0]
    if head == "lit":
        return tree[1]
    if head == "var":
        return env[tree[1]]
    if head == "!":
        return not _evaluate(tree[1], env)
    if head == "&&":
        return _evaluate(tree[1], env) and _evaluate(tree[2], env)
    if head == "||":
        return _evaluate(tree[1], env) or _evaluate(tree[2], env)
    left, right = _evaluate(tree[1], env), _evaluate(tree[2], env)
    return {"==": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
            ">": left > right, ">=": left >= right}[head]
