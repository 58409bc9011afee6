"""Python 2 → 3 translation of control files: each construct, line numbers, errors."""

from __future__ import annotations

import contextlib
import io
import textwrap

import pytest

from autoserv import control, legacy

# (python 2 source, python 3 translation): one row per construct
CASES = [
    ('print "hello"\n', 'print("hello")\n'),
    ("print\n", "print()\n"),
    ('print "a", x\n', 'print("a", x)\n'),
    ('print "a",\n', 'print("a", end=" ")\n'),
    ("print >>f, x\n", "print(x, file=f)\n"),
    ("print >>sys.stderr, 'a', b,\n", "print('a', b, file=sys.stderr, end=\" \")\n"),
    ("print >>f\n", "print(file=f)\n"),
    ("print (a), b\n", "print((a), b)\n"),
    ("print -1\n", "print(-1)\n"),
    ("print x; print y\n", "print(x); print(y)\n"),
    ("if x: print y\n", "if x: print(y)\n"),
    ("print x  # note\n", "print(x)  # note\n"),
    ("print('already python 3')\n", "print('already python 3')\n"),
    ("print(a, file=f)\n", "print(a, file=f)\n"),
    ("exec code\n", "exec(code)\n"),
    ("exec code in ns\n", "exec(code, ns)\n"),
    ("exec code in g, l\n", "exec(code, g, l)\n"),
    ("try:\n    pass\nexcept E, e:\n    pass\n", "try:\n    pass\nexcept E as e:\n    pass\n"),
    ("try:\n    pass\nexcept (A, B), e:\n    pass\n", "try:\n    pass\nexcept (A, B) as e:\n    pass\n"),
    ("try:\n    pass\nexcept (A, B):\n    pass\n", "try:\n    pass\nexcept (A, B):\n    pass\n"),
    ('raise E, "msg"\n', 'raise E("msg")\n'),
    ('raise E, "msg", tb\n', 'raise E("msg").with_traceback(tb)\n'),
    ("raise E('modern')\n", "raise E('modern')\n"),
    ("mode = 0777\n", "mode = 0o777\n"),
    ("mode = 0644L\n", "mode = 0o644\n"),
    ("n = 10L + 0xffL\n", "n = 10 + 0xff\n"),
    ("zero = 0 + 00\n", "zero = 0 + 00\n"),
    ("d.has_key(k)\n", "d.__contains__(k)\n"),
    ("for k, v in d.iteritems(): pass\n", "for k, v in d.items(): pass\n"),
    ("d.itervalues(); d.iterkeys()\n", "d.values(); d.keys()\n"),
    ("s = `x`\n", "s = repr(x)\n"),
    ("s = `x` + `y + 1`\n", "s = repr(x) + repr(y + 1)\n"),
    ("a <> b\n", "a != b\n"),
    ('p = ur"\\d"\n', 'p = r"\\d"\n'),
    ("if x:\n\ty = 1\n        z = 2\n", "if x:\n        y = 1\n        z = 2\n"),
]


@pytest.mark.parametrize(("py2", "py3"), CASES, ids=[c[0].strip()[:30] for c in CASES])
def test_construct(py2: str, py3: str) -> None:
    assert legacy.translate(py2).source == py3
    compile(py3, "<translated>", "exec")


def test_strings_and_comments_are_untouched() -> None:
    src = textwrap.dedent(
        '''\
        doc = """print "x"
        \tkeep this tab, 0777 and <> as they are"""
        s = 'print "y" 0777'  # print "z"
        print "done"
        '''
    )
    out = legacy.translate(src).source
    assert out.splitlines()[:3] == src.splitlines()[:3]
    assert out.splitlines()[3] == 'print("done")'


def test_line_numbers_preserved_everywhere() -> None:
    src = "".join(py2 for py2, _ in CASES if "try" not in py2 and "\t" not in py2)
    src += "print >>(f\n      ), a,\n" + "try:\n\tpass\nexcept E, e:\n  print e\n"
    out = legacy.translate(src)
    assert out.source.count("\n") == src.count("\n")
    compile(out.source, "<t>", "exec")
    # every change is reported against the line it was on
    lines = src.splitlines()
    for line, what in out.changes:
        if line:
            assert 1 <= line <= len(lines), what


def test_print_semantics() -> None:
    src = 'import sys\nprint "a", 1,\nprint "b"\nprint >>sys.stdout, "c", `2`\nprint\n'
    code = compile(legacy.translate(src).source, "<t>", "exec")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {})
    assert out.getvalue() == "a 1 b\nc 2\n\n"


def test_exceptions_semantics() -> None:
    src = textwrap.dedent(
        """\
        try:
            raise ValueError, "bad"
        except ValueError, e:
            caught = str(e)
        mode = 0755
        ok = {1: 2}.has_key(1) and 1 <> 2
        """
    )
    ns: dict = {}
    exec(compile(legacy.translate(src).source, "<t>", "exec"), ns)
    assert (ns["caught"], ns["mode"], ns["ok"]) == ("bad", 0o755, True)


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_load_python3_is_not_translated(tmp_path) -> None:
    # valid Python 3 (print as a function, 'exec' as a call): compiled as is
    path = _write(tmp_path, "ctl", "print('x', end='')\nexec('y = 1')\n")
    loaded = control.load(path)
    assert not loaded.translated and loaded.changes == []


def test_load_translates_python2_and_keeps_lines_in_tracebacks(tmp_path) -> None:
    path = _write(tmp_path, "ctl", 'print "line 1"\n\n\nraise KeyError, "line 4"\n')
    loaded = control.load(path)
    assert loaded.translated
    with pytest.raises(KeyError) as info:
        with contextlib.redirect_stdout(io.StringIO()):
            control.execute(loaded, {})
    assert control.control_frame(info.value, path) == 4
    assert info.traceback[-1].path == path or str(info.traceback[-1].path) == path


@pytest.mark.parametrize(
    ("text", "line", "note"),
    [
        # Python 3 with a real syntax error: reported at its line
        ("x = 1\ndef f(:\n    pass\n", 2, ""),
        # Python 2 that translates, with an error further down
        ('print "ok"\nx = = 1\n', 2, "still invalid after Python 2 translation"),
        # not even tokenizable
        ('x = 1\ns = """never closed\n', 2, "unterminated"),
    ],
)
def test_load_neither_python3_nor_python2(tmp_path, text: str, line: int, note: str) -> None:
    path = _write(tmp_path, "bad.control", text)
    with pytest.raises(control.ControlFileSyntaxError) as info:
        control.load(path)
    err = info.value
    assert err.filename == path and err.lineno == line
    assert str(err).startswith(f"{path}:{line}")
    assert "SyntaxError" in str(err) and note in str(err)
    assert "\n" not in str(err)


def test_crlf_removed(tmp_path) -> None:
    path = tmp_path / "ctl"
    path.write_bytes(b"x = 1\r\ny = 2\rz = 3\r\n")
    text = control.read_source(str(path))
    assert "\r" not in text and text.count("\n") == 3
