"""A small renderer for the part of Go's text/template that Ollama chat templates use.

Ollama's Modelfile TEMPLATE is a Go text/template. To check, in Python and without
Ollama, that a Modelfile renders a conversation exactly like the tokenizer's Jinja
chat template, we render it here. No maintained PyPI package does this (the ones
that exist wrap Go through CGo and are at 0.0.x), so this supports the subset the
lab's templates (lab_utils/export/ollama_templates.py) and Ollama's 20 stock chat templates
(ollama/ollama template/*.gotmpl; tests/test_chat_templates.py renders each of them and compares
with Ollama's own expected output) use, and refuses anything else with a TemplateError instead of
guessing:

    text, {{ pipeline }}, trim markers {{- and -}}, comments {{/* ... */}}
    {{ if P }} ... {{ else if P }} ... {{ else }} ... {{ end }}
    {{ range P }} / {{ range $i, $m := P }} / {{ range $m := P }} ... {{ else }} ... {{ end }}
    {{ break }} and {{ continue }} inside a range (Go >= 1.18)
    {{ $x := P }} declares, {{ $x = P }} assigns (to the nearest enclosing $x, as in Go >= 1.11)
    operands: .Field.Sub, ., $, $.Field, $x, $x.Field, "strings" (Go escapes), integers, true/false,
              ( P ) and ( P ).Field
    functions: eq (true when the first argument equals any other), ne, lt, le, gt, ge,
               and, or (Go's short-circuit values), not, len, index,
               slice x i [j] (Go's x[i:j]: `slice x 1` drops the first element),
               printf with the verbs %s %v %d %q %%

Not covered (a TemplateError names it): pipes `P | f`, with, define/template/block, and
Ollama's own functions (json, currentDate, yesterdayDate, toTypeScriptType). Truth is Go's:
false, 0, "", nil and empty collections are false. Data are dicts (field names are keys) and lists.
"""

import json
import re
from lab_utils.core.errors import LabError


class TemplateError(LabError, ValueError):
    """A template this renderer cannot parse or evaluate; the message says where."""


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*("(?:\\.|[^"\\])*"|\(|\)|:=|=|,|\$\w*(?:\.\w+)*|\.\w+(?:\.\w+)*|\.|-?\d+|\w+)')
_FUNCTIONS = {
    "eq": lambda a, *rest: any(a == b for b in rest),
    "ne": lambda a, b: a != b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "not": lambda a: not truth(a), "len": len,
    "index": lambda a, *keys: _index(a, keys),
    "slice": lambda a, *bounds: _slice(a, bounds),
    "printf": lambda fmt, *args: _printf(fmt, args),
}
_VERB = re.compile(r"%([%svdq])")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def truth(value) -> bool:
    return bool(value)  # Go's rule coincides with Python's for str, int, bool, None, list, dict


def _slice(value, bounds):
    """Go's slice: `slice x i` is x[i:], `slice x i j` is x[i:j] (Python's slice(i) would be x[:i])."""
    if len(bounds) > 2:
        raise TemplateError("slice with 3 indices (capacity) is not supported")
    return value[bounds[0] if bounds else 0:bounds[1] if len(bounds) > 1 else None]


def _printf(fmt: str, args) -> str:
    """Go's fmt.Sprintf for %s %v %d %q %% (enough for Ollama's templates)."""
    args = iter(args)

    def verb(match):
        if match.group(1) == "%":
            return "%"
        value = next(args, None)
        if match.group(1) == "q":
            return json.dumps(str(value), ensure_ascii=False)
        return str(value).lower() if isinstance(value, bool) else str(value)

    return _VERB.sub(verb, fmt)


def _index(value, keys):
    for key in keys:
        value = value[key]
    return value


def render(template: str, data: dict) -> str:
    nodes, end = _parse(_lex(template), 0, ())
    if end is not None:
        raise TemplateError(f"unexpected {{{{ {end} }}}}")
    out = []
    try:
        _run(nodes, data, data, [{}], out)
    except (_Break, _Continue):
        raise TemplateError("{{ break }} or {{ continue }} outside a {{ range }}") from None
    return "".join(out)


# ---------------------------------------------------------------- lexing and parsing

def _lex(template: str) -> list:
    """[("text", s) | ("action", s)], with the trim markers applied to the neighbouring text."""
    items, pos, trim_next = [], 0, False
    for match in _ACTION.finditer(template):
        text = template[pos:match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        items += [("text", text), ("action", match.group(2).strip())]
        trim_next, pos = bool(match.group(3)), match.end()
    text = template[pos:]
    items.append(("text", text.lstrip() if trim_next else text))
    return items


def _parse(items, pos, stops):
    """Nodes until an action in `stops`; returns (nodes, index of that action or None)."""
    nodes = []
    while pos < len(items):
        kind, body = items[pos]
        if kind == "text":
            if body:
                nodes.append(("text", body))
            pos += 1
            continue
        keyword = body.split(None, 1)[0] if body else ""
        if body == "end" or keyword == "else":
            if not any(body == s or body.startswith(s + " ") or (s == "else" and keyword == "else") for s in stops):
                raise TemplateError(f"unexpected {{{{ {body} }}}}")
            return nodes, (pos, body)
        if keyword in ("if", "range"):
            node, pos = _parse_block(items, pos, keyword, body[len(keyword):].strip())
            nodes.append(node)
            continue
        if body in ("break", "continue"):
            nodes.append((body,))
            pos += 1
            continue
        if body.startswith("/*") and body.endswith("*/"):  # a comment
            pos += 1
            continue
        if keyword in ("with", "define", "template", "block"):
            raise TemplateError(f"{{{{ {body[:40]} }}}} is not supported by this renderer (see its docstring)")
        nodes.append(_assignment(body) or ("output", _expression(body)))
        pos += 1
    return nodes, None


def _parse_block(items, pos, keyword, header):
    if keyword == "if":
        branches = [(_expression(header), None)]
    else:
        declared = re.match(r"^(\$\w+)\s*(?:,\s*(\$\w+)\s*)?:=\s*(.*)$", header, re.S)
        variables = (declared.group(1), declared.group(2)) if declared else (None, None)
        branches = [(_expression(declared.group(3) if declared else header), variables)]
    bodies, otherwise = [], []
    pos += 1
    while True:
        body, stop = _parse(items, pos, ("end", "else"))
        if stop is None:
            raise TemplateError(f"{{{{ {keyword} {header} }}}} has no {{{{ end }}}}")
        pos, action = stop
        bodies.append(body)
        pos += 1
        if action == "end":
            break
        rest = action[len("else"):].strip()
        if rest.startswith("if ") and keyword == "if":
            branches.append((_expression(rest[3:]), None))
        elif rest:
            raise TemplateError(f"unsupported {{{{ {action} }}}}")
        else:
            otherwise, stop = _parse(items, pos, ("end",))
            if stop is None:
                raise TemplateError(f"{{{{ {keyword} {header} }}}} has no {{{{ end }}}}")
            pos = stop[0] + 1
            break
    if keyword == "if":
        return ("if", [(cond, body) for (cond, _), body in zip(branches, bodies)], otherwise), pos
    expression, variables = branches[0]
    return ("range", variables, expression, bodies[0], otherwise), pos


def _assignment(body: str):
    match = re.match(r"^(\$\w+)\s*(:?=)\s*(.*)$", body, re.S)
    if not match:
        return None
    return ("assign", match.group(1), match.group(2) == ":=", _expression(match.group(3)))


def _expression(text: str):
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise TemplateError(f"cannot read {text[pos:]!r} in {{{{ {text} }}}}")
        tokens.append(match.group(1))
        pos = match.end()
    expression, rest = _command(tokens, text)
    if rest:
        raise TemplateError(f"unexpected {' '.join(rest)!r} in {{{{ {text} }}}}")
    return expression


def _command(tokens, text):
    """A function call or a single operand; returns (expression, remaining tokens)."""
    if not tokens:
        raise TemplateError(f"empty pipeline in {{{{ {text} }}}}")
    if tokens[0] in ("and", "or") or tokens[0] in _FUNCTIONS:  # a function call
        name, args, rest = tokens[0], [], tokens[1:]
        while rest and rest[0] != ")":
            operand, rest = _operand(rest, text)
            args.append(operand)
        return ("call", name, args), rest
    return _operand(tokens, text)


def _operand(tokens, text):
    token, rest = tokens[0], tokens[1:]
    if token == "(":
        expression, rest = _command(rest, text)
        if not rest or rest[0] != ")":
            raise TemplateError(f"missing ) in {{{{ {text} }}}}")
        rest = rest[1:]
        if rest and rest[0].startswith(".") and rest[0] != ".":  # (index .Messages 1).Role
            return ("field", expression, rest[0].strip(".").split(".")), rest[1:]
        return expression, rest
    if token.startswith('"'):
        return ("value", json.loads(token)), rest
    if re.fullmatch(r"-?\d+", token):
        return ("value", int(token)), rest
    if token in ("true", "false", "nil"):
        return ("value", {"true": True, "false": False, "nil": None}[token]), rest
    if token.startswith(("$", ".")):
        return ("path", token), rest
    raise TemplateError(f"unknown function or value {token!r} in {{{{ {text} }}}}")


# ---------------------------------------------------------------- evaluation

def _run(nodes, dot, root, scopes, out):
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "break":
            raise _Break()
        elif kind == "continue":
            raise _Continue()
        elif kind == "output":
            value = _eval(node[1], dot, root, scopes)
            out.append("" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
        elif kind == "assign":
            _, name, declare, expression = node
            value = _eval(expression, dot, root, scopes)
            target = scopes[-1] if declare else next((s for s in reversed(scopes) if name in s), None)
            if target is None:
                raise TemplateError(f"{name} = ... assigns an undeclared variable (use :=)")
            target[name] = value
        elif kind == "if":
            for condition, body in node[1]:
                if truth(_eval(condition, dot, root, scopes)):
                    _run(body, dot, root, scopes + [{}], out)
                    break
            else:
                _run(node[2], dot, root, scopes + [{}], out)
        elif kind == "range":
            _, (index_var, element_var), expression, body, otherwise = node
            items = _eval(expression, dot, root, scopes) or []
            pairs = list(items.items()) if isinstance(items, dict) else list(enumerate(items))
            for index, element in pairs:
                scope = {}
                if index_var and element_var:
                    scope = {index_var: index, element_var: element}
                elif index_var:
                    scope = {index_var: element}
                try:
                    _run(body, element, root, scopes + [scope], out)
                except _Continue:
                    continue
                except _Break:
                    break
            if not pairs:
                _run(otherwise, dot, root, scopes + [{}], out)


def _eval(expression, dot, root, scopes):
    kind = expression[0]
    if kind == "value":
        return expression[1]
    if kind == "path":
        return _path(expression[1], dot, root, scopes)
    if kind == "field":
        return _fields(_eval(expression[1], dot, root, scopes), expression[2], "(...)")
    _, name, args = expression
    if name == "and":
        value = True
        for arg in args:
            value = _eval(arg, dot, root, scopes)
            if not truth(value):
                return value
        return value
    if name == "or":
        value = False
        for arg in args:
            value = _eval(arg, dot, root, scopes)
            if truth(value):
                return value
        return value
    return _FUNCTIONS[name](*(_eval(arg, dot, root, scopes) for arg in args))


def _path(token: str, dot, root, scopes):
    if token.startswith("$"):
        name, *fields = token.split(".")
        if name == "$":
            value = root
        else:
            scope = next((s for s in reversed(scopes) if name in s), None)
            if scope is None:
                raise TemplateError(f"undefined variable {name}")
            value = scope[name]
    else:
        value, fields = dot, [f for f in token.split(".") if f]
    return _fields(value, fields, token)


def _fields(value, fields, where: str):
    for field in fields:
        if not isinstance(value, dict) or field not in value:
            raise TemplateError(f"can't evaluate field {field} in {where}")
        value = value[field]
    return value
