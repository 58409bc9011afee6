"""Translate legacy Python 2 control files to Python 3, keeping every line where it was.

Autotest control files were Python 2.  :mod:`lib2to3` is gone from modern Python, so this
module works on the token stream of :mod:`tokenize` (which still reads Python 2 source) and
rewrites only what Python 3 cannot compile:

===============================  ===========================================
Python 2                         Python 3
===============================  ===========================================
``print x, y``                   ``print(x, y)``
``print x,``                     ``print(x, end=" ")``
``print >>f, x``                 ``print(x, file=f)``
``print``                        ``print()``
``exec code in ns``              ``exec(code, ns)``
``except E, e:``                 ``except E as e:``
``raise E, "msg"``               ``raise E("msg")``
``raise E, v, tb``               ``raise E(v).with_traceback(tb)``
``0777``, ``10L``                ``0o777``, ``10``
``d.has_key(k)``                 ``d.__contains__(k)``
``d.iteritems()`` (values/keys)  ``d.items()`` (values/keys)
```x```                          ``repr(x)``
``a <> b``                       ``a != b``
``ur"..."``                      ``r"..."``
tabs in indentation              expanded to 8 columns (Python 2's rule)
===============================  ===========================================

Every edit stays inside one physical line, and no line is added or removed, so tracebacks
and syntax errors of the translated code name the user's real line numbers.
:func:`translate` is applied by :mod:`autoserv.control` only when the source does not
compile as Python 3.  Names that only fail at run time (``xrange``, ``unicode``...) are
provided by :data:`PY2_BUILTINS` in the namespace of every control file.
"""

from __future__ import annotations

import functools
import io
import tokenize
from dataclasses import dataclass, field
from tokenize import TokenInfo
from typing import Any

__all__ = ["Translation", "LegacyTranslationError", "translate", "PY2_BUILTINS"]

#: Python 2 builtins every control file may use (translated or not).
PY2_BUILTINS: dict[str, Any] = {
    "xrange": range,
    "unicode": str,
    "basestring": str,
    "long": int,
    "raw_input": input,
    "reduce": functools.reduce,
    "unichr": chr,
}

_RENAMES = {
    "iteritems": "items",
    "itervalues": "values",
    "iterkeys": "keys",
    "has_key": "__contains__",
}
_OPEN = "([{"
_CLOSE = ")]}"
_SKIP = {tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
_ASSIGN_OPS = {"=", "+=", "-=", "*=", "/=", "//=", "%=", "**=", ">>=", "<<=", "&=", "|=", "^="}


class LegacyTranslationError(SyntaxError):
    """The source could not be read even as Python 2 (``filename``/``lineno`` say where)."""


@dataclass
class Translation:
    """The result of :func:`translate`: the new source and what was changed, by line."""

    source: str
    changes: list[tuple[int, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclass(order=True)
class _Edit:
    row: int
    start: int
    end: int
    order: int
    text: str = field(compare=False)


class _Translator:
    def __init__(self, source: str, filename: str) -> None:
        self.source = source
        self.filename = filename
        self.lines = source.splitlines(keepends=True)
        self.edits: list[_Edit] = []
        self.changes: list[tuple[int, str]] = []
        self.toks: list[TokenInfo] = []

    # -- helpers -------------------------------------------------------------------------

    def _error(self, msg: str, row: int, col: int = 0) -> LegacyTranslationError:
        text = self.lines[row - 1] if 0 < row <= len(self.lines) else ""
        return LegacyTranslationError(msg, (self.filename, row, col + 1, text))

    def _edit(self, row: int, start: int, end: int, text: str) -> None:
        self.edits.append(_Edit(row, start, end, len(self.edits), text))

    def _replace(self, tok: TokenInfo, text: str) -> None:
        self._edit(tok.start[0], tok.start[1], tok.end[1], text)

    def _insert_after(self, tok: TokenInfo, text: str) -> None:
        self._edit(tok.end[0], tok.end[1], tok.end[1], text)

    def _change(self, row: int, what: str) -> None:
        self.changes.append((row, what))

    def _tokenize(self) -> None:
        readline = io.StringIO(self.source).readline
        try:
            toks = list(tokenize.generate_tokens(readline))
        except tokenize.TokenError as exc:
            msg, (row, col) = exc.args
            raise self._error(str(msg), row, col) from None
        except IndentationError as exc:
            raise self._error(exc.msg, exc.lineno or 0, (exc.offset or 1) - 1) from None
        # Python 3's tokenizer reports the whitespace before a backtick as an error token.
        self.toks = [t for t in toks if not (t.type == tokenize.ERRORTOKEN and t.string.isspace())]

    def _statement_end(self, i: int) -> int:
        """Index of the token ending the statement that starts at ``i`` (NEWLINE, ';'...)."""
        depth = 0
        toks = self.toks
        while i < len(toks):
            t = toks[i]
            if t.type == tokenize.OP and t.string in _OPEN:
                depth += 1
            elif t.type == tokenize.OP and t.string in _CLOSE:
                depth -= 1
            elif depth <= 0 and (
                t.type in (tokenize.NEWLINE, tokenize.ENDMARKER)
                or (t.type == tokenize.OP and t.string == ";")
            ):
                return i
            i += 1
        return len(toks) - 1

    def _significant(self, first: int, end: int) -> list[int]:
        """Indexes of the tokens in [first, end) that are code (no comments, NL...)."""
        return [k for k in range(first, end) if self.toks[k].type not in _SKIP]

    def _top_level(self, indexes: list[int], op_type: int, text: str) -> list[int]:
        """Those of ``indexes`` that are ``text`` at bracket depth 0."""
        depth = 0
        found = []
        for k in indexes:
            t = self.toks[k]
            if t.type == tokenize.OP and t.string in _OPEN:
                depth += 1
            elif t.type == tokenize.OP and t.string in _CLOSE:
                depth -= 1
            elif depth == 0 and t.type == op_type and t.string == text:
                found.append(k)
        return found

    def _matching_close(self, i: int) -> int:
        depth = 0
        for k in range(i, len(self.toks)):
            t = self.toks[k]
            if t.type == tokenize.OP and t.string in _OPEN:
                depth += 1
            elif t.type == tokenize.OP and t.string in _CLOSE:
                depth -= 1
                if depth == 0:
                    return k
        return len(self.toks) - 1

    def _replace_up_to(self, tok: TokenInfo, nxt: TokenInfo, text: str) -> None:
        """Replace ``tok`` and the blanks after it (when ``nxt`` is on the same row)."""
        end = nxt.start[1] if nxt.start[0] == tok.start[0] else tok.end[1]
        self._edit(tok.start[0], tok.start[1], end, text)

    # -- statements ----------------------------------------------------------------------

    def _is_call_form(self, i: int, end: int) -> bool:
        """``print(...)`` / ``exec(...)`` that is the whole statement: valid as is."""
        nxt = self.toks[i + 1]
        if not (nxt.type == tokenize.OP and nxt.string == "("):
            return False
        close = self._matching_close(i + 1)
        rest = self._significant(close + 1, end)
        return not rest

    def _print(self, i: int) -> None:
        tok = self.toks[i]
        end = self._statement_end(i)
        body = self._significant(i + 1, end)
        if body:
            first = self.toks[body[0]]
            if first.type == tokenize.OP and (first.string in _ASSIGN_OPS or first.string == "."):
                return  # ``print`` used as a name: Python 3 code
            if self._is_call_form(i, end):
                return
        commas = self._top_level(body, tokenize.OP, ",")
        trailing = self.toks[body[-1]] if commas and commas[-1] == body[-1] else None
        items = body[:-1] if trailing is not None else body
        extras: list[str] = []
        if items and self.toks[items[0]].type == tokenize.OP and self.toks[items[0]].string == ">>":
            gt = self.toks[items[0]]
            stream_end = next((c for c in commas if c in items), None)
            stream = [k for k in items[1:] if stream_end is None or k < stream_end]
            items = [k for k in items if stream_end is not None and k > stream_end]
            if not stream:
                raise self._error("print >> without a file", gt.start[0], gt.start[1])
            s_first, s_last = self.toks[stream[0]], self.toks[stream[-1]]
            if not items:
                # print >>f   ->   print(file=f)
                self._replace_up_to(gt, s_first, "file=")
                if stream_end is not None and self.toks[stream_end] is not trailing:
                    self._replace(self.toks[stream_end], "")
            elif s_first.start[0] == s_last.end[0] == self.toks[items[0]].start[0]:
                # print >>f, a, b   ->   print(a, b, file=f)
                line = self.lines[s_first.start[0] - 1]
                extras.append("file=" + line[s_first.start[1] : s_last.end[1]])
                self._edit(gt.start[0], gt.start[1], self.toks[items[0]].start[1], "")
            else:
                # a stream expression spanning lines stays in place, as a keyword first:
                # print >>f, a   ->   print(file=f, *(a,))
                self._replace_up_to(gt, s_first, "file=")
                first_item = self.toks[items[0]]
                self._edit(first_item.start[0], first_item.start[1], first_item.start[1], "*(")
                self._insert_after(self.toks[items[-1]], ",)")
        if trailing is not None:
            extras.append('end=" "')
        if body:
            self._replace_up_to(tok, self.toks[body[0]], "print(")
        else:
            self._replace(tok, "print(")
        tail = ""
        for extra in extras:
            tail += (", " if items or tail else "") + extra
        tail += ")"
        if trailing is not None:
            self._replace(trailing, tail)
        elif body:
            self._insert_after(self.toks[body[-1]], tail)
        else:
            self._insert_after(tok, tail)
        self._change(tok.start[0], "print statement")

    def _exec(self, i: int) -> None:
        tok = self.toks[i]
        end = self._statement_end(i)
        body = self._significant(i + 1, end)
        if not body or self._is_call_form(i, end):
            return
        first = self.toks[body[0]]
        if first.type == tokenize.OP and (first.string in _ASSIGN_OPS or first.string == "."):
            return
        self._replace_up_to(tok, first, "exec(")
        for k in self._top_level(body, tokenize.NAME, "in"):
            self._replace(self.toks[k], ",")
            # "code in ns" -> "code , ns": drop the blank before the comma
            prev = self.toks[k - 1]
            if prev.end[0] == self.toks[k].start[0]:
                self._edit(prev.end[0], prev.end[1], self.toks[k].start[1], "")
        self._insert_after(self.toks[body[-1]], ")")
        self._change(tok.start[0], "exec statement")

    def _raise(self, i: int) -> None:
        tok = self.toks[i]
        end = self._statement_end(i)
        body = self._significant(i + 1, end)
        commas = self._top_level(body, tokenize.OP, ",")
        if not commas or len(commas) > 2:
            return
        first_comma = self.toks[commas[0]]
        self._replace_up_to(first_comma, self.toks[commas[0] + 1], "(")
        if len(commas) == 2:
            second = self.toks[commas[1]]
            self._replace_up_to(second, self.toks[commas[1] + 1], ").with_traceback(")
        self._insert_after(self.toks[body[-1]], ")")
        self._change(tok.start[0], "raise E, value")

    def _except(self, i: int) -> None:
        tok = self.toks[i]
        # the header ends at the first ':' at depth 0
        depth = 0
        k = i + 1
        header: list[int] = []
        while k < len(self.toks):
            t = self.toks[k]
            if t.type == tokenize.OP and t.string in _OPEN:
                depth += 1
            elif t.type == tokenize.OP and t.string in _CLOSE:
                depth -= 1
            elif depth == 0 and t.type == tokenize.OP and t.string == ":":
                break
            elif t.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                return
            if t.type not in _SKIP:
                header.append(k)
            k += 1
        commas = self._top_level(header, tokenize.OP, ",")
        if len(commas) != 1:
            return
        comma = self.toks[commas[0]]
        nxt = self.toks[commas[0] + 1]
        if nxt.start[0] == comma.start[0]:
            self._edit(comma.start[0], comma.start[1], nxt.start[1], " as ")
        else:
            self._replace(comma, " as")
        self._change(tok.start[0], "except E, e")

    # -- main loop -----------------------------------------------------------------------

    def run(self) -> Translation:
        self._tokenize()
        toks = self.toks
        depth = 0
        stmt_start = True
        backtick_open: TokenInfo | None = None
        prev: TokenInfo | None = None
        for i, t in enumerate(toks):
            typ, s = t.type, t.string
            if typ == tokenize.NEWLINE:
                stmt_start = True
                prev = t
                continue
            if typ in _SKIP or typ == tokenize.ENDMARKER:
                continue
            if typ == tokenize.NAME:
                if stmt_start and s == "print":
                    self._print(i)
                elif stmt_start and s == "exec":
                    self._exec(i)
                elif stmt_start and s == "raise":
                    self._raise(i)
                elif s == "except":
                    self._except(i)
                elif s in _RENAMES and prev is not None and prev.string == "." and (
                    prev.type == tokenize.OP
                ):
                    self._replace(t, _RENAMES[s])
                    self._change(t.start[0], f".{s}")
                elif (
                    s in ("L", "l")
                    and prev is not None
                    and prev.type == tokenize.NUMBER
                    and prev.end == t.start
                ):
                    self._replace(t, "")
                    self._change(t.start[0], "long literal")
                elif s.lower() == "ur" and i + 1 < len(toks) and (
                    toks[i + 1].type == tokenize.STRING and toks[i + 1].start == t.end
                ):
                    self._replace(t, "r")
                    self._change(t.start[0], "ur string prefix")
            elif typ == tokenize.NUMBER:
                nxt = toks[i + 1] if i + 1 < len(toks) else None
                if (
                    s == "0"
                    and nxt is not None
                    and nxt.type == tokenize.NUMBER
                    and nxt.start == t.end
                    and nxt.string.isdigit()
                    and set(nxt.string) <= set("01234567")
                ):
                    self._edit(t.start[0], t.start[1], nxt.end[1], "0o" + nxt.string)
                    self._change(t.start[0], "octal literal")
            elif typ == tokenize.OP:
                if s in _OPEN:
                    depth += 1
                elif s in _CLOSE:
                    depth -= 1
                elif s == "<":
                    nxt = toks[i + 1] if i + 1 < len(toks) else None
                    if nxt is not None and nxt.string == ">" and nxt.start == t.end:
                        self._edit(t.start[0], t.start[1], nxt.end[1], "!=")
                        self._change(t.start[0], "<>")
            elif typ == tokenize.ERRORTOKEN and s == "`":
                if backtick_open is None:
                    self._replace(t, "repr(")
                    backtick_open = t
                else:
                    self._replace(t, ")")
                    self._change(backtick_open.start[0], "backticks")
                    backtick_open = None
            stmt_start = typ == tokenize.OP and depth == 0 and s in (";", ":")
            prev = t
        return Translation(self._apply(), self.changes)

    def _apply(self) -> str:
        lines = list(self.lines)
        for edit in sorted(self.edits, reverse=True):
            line = lines[edit.row - 1]
            lines[edit.row - 1] = line[: edit.start] + edit.text + line[edit.end :]
        # Expand tabs in indentation (Python 2 counted a tab as up to 8 columns), except
        # on lines that continue a multi-line string, whose blanks are data.
        in_string: set[int] = set()
        for t in self.toks:
            if t.type == tokenize.STRING and t.end[0] > t.start[0]:
                in_string.update(range(t.start[0] + 1, t.end[0] + 1))
        tabs = False
        for number, line in enumerate(lines, 1):
            if number in in_string:
                continue
            body = line.lstrip(" \t")
            lead = line[: len(line) - len(body)]
            if "\t" in lead:
                lines[number - 1] = lead.expandtabs(8) + body
                tabs = True
        if tabs:
            self._change(0, "tabs in indentation")
        return "".join(lines)


def translate(source: str, filename: str = "<control>") -> Translation:
    """Translate Python 2 ``source`` to Python 3, line for line.

    Raises :class:`LegacyTranslationError` (a :class:`SyntaxError` naming ``filename`` and
    the line) if the source cannot even be tokenized.  The result is not compiled here.
    """
    translation = _Translator(source, filename).run()
    if translation.source.count("\n") != source.count("\n"):  # pragma: no cover - invariant
        raise AssertionError("legacy translation changed the number of lines")
    return translation
