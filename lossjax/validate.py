"""Config checks that know no schema: YAML read within bounds, typed and ranged values.

Every check raises :class:`~lossjax.errors.ConfigError` with one line that starts with the
key's full path, ``PATH: got VALUE, expected WHAT``; :mod:`lossjax.config` applies them to its
schema. Importing this module imports no JAX.
"""
from __future__ import annotations

import contextlib
import difflib
import math
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import yaml

from lossjax.errors import ConfigError, one_line

# Bounds on what a config may hold, so that reading and checking one takes milliseconds and
# its error messages stay short, whatever it holds. A written config is a few kilobytes, nests
# four levels and sweeps lists of a handful of values; the bounds are far above that and far
# below what would take the (pure-Python) YAML reader or the checks minutes:
# - MAX_CONFIG_BYTES, of a config file and of one --set: PyYAML reads ~1 MB/s.
# - MAX_LIST, entries in one list or mapping: a sweep trains the product of its swept lists,
#   and 100,000 seeds are already past any sweep that finishes (the memory check, later, needs
#   the data; this one needs nothing).
# - MAX_VALUES, values once YAML aliases (or, from Python, shared references) are expanded:
#   ten levels of nine aliases each are 3.5 billion values in a 400-byte file, and every check
#   and message that walks them would take minutes.
# - MAX_DEPTH, levels of lists and mappings inside one another (a cycle, from Python, too).
MAX_CONFIG_BYTES = 1 << 20
MAX_LIST = 100_000
MAX_VALUES = 1_000_000
MAX_DEPTH = 32


# --------------------------------------------------------------------------------------------
# YAML reading: '1e-3' is a float, and a repeated key is an error.


class DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                try:
                    key = self.construct_object(key_node, deep=True)
                    if key in seen:
                        raise DuplicateKeyError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark
                        )
                    seen.add(key)
                except TypeError:  # an unhashable key: let PyYAML report it
                    pass
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) wants a dot in a float: without this, 1e-3 would load as the string '1e-3'.
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_problem(e: yaml.YAMLError) -> str:
    """One line from a PyYAML error: 'PROBLEM at line L, column C'."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


class Unreadable(Exception):
    """YAML that PyYAML cannot turn into values without failing outside its own errors."""


def read_yaml(text: str) -> Any:
    """``yaml.load`` with our loader, with its failures that are not ``YAMLError``s made
    :class:`Unreadable`: deep nesting exhausts the reader's recursion, and an integer of
    thousands of digits passes Python's limit on converting text to int."""
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise Unreadable(f"nested too deeply for the YAML reader; a config nests a few levels "
                         f"(at most {MAX_DEPTH})") from None
    except ValueError as e:  # int('9' * 5000): Python refuses integers past 4300 digits
        raise Unreadable(f"holds a value Python cannot read ({one_line(e).split(':')[0][:120]}"
                         ")") from None


# --------------------------------------------------------------------------------------------
# Messages


class _Shown(Exception):
    """Raised inside :func:`show` once it has enough characters: it stops the walk there."""


def show(v: Any, limit: int = 80) -> str:
    """A value as the user wrote it (YAML-flavoured), shortened to ``limit`` characters.

    It walks only as far as the ``limit`` characters reach (each value it visits adds one at
    least), so a huge, deep, aliased or cyclic value costs no more than a small one."""
    parts: list[str] = []
    size = 0

    def put(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)
        if size > limit:
            raise _Shown

    def fmt(x, depth: int) -> None:
        if depth > MAX_DEPTH:
            put("...")
            raise _Shown
        if x is None or isinstance(x, bool):
            put("null" if x is None else "true" if x else "false")
        elif isinstance(x, list | tuple | dict):
            items = x.items() if isinstance(x, dict) else x
            put("{" if isinstance(x, dict) else "[")
            for i, item in enumerate(items):
                if i:
                    put(", ")
                if isinstance(x, dict):
                    fmt(item[0], depth + 1)
                    put(": ")
                    item = item[1]
                fmt(item, depth + 1)
            put("}" if isinstance(x, dict) else "]")
        elif isinstance(x, int) and x.bit_length() > 14_000:  # past 4300 digits: repr refuses
            put(f"<an integer of {x.bit_length()} bits>")
        else:
            put(repr(x[: limit + 1] if isinstance(x, str) else x)[: limit + 3])

    with contextlib.suppress(_Shown):
        fmt(v, 0)
    s = "".join(parts)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def got(v: Any) -> str:
    """'got VALUE', with the type named where the value alone could mislead."""
    kind = None
    if isinstance(v, bool):
        kind = "a boolean"
    elif isinstance(v, dict):
        kind = "a mapping"
    elif isinstance(v, str):
        try:  # '3' or 'true' quoted in the file: say it is a string (a short one: a scalar)
            looks_typed = 0 < len(v.strip()) <= 100 and not isinstance(
                yaml.load(v, Loader=Loader),  # noqa: S506
                str,
            )
        except yaml.YAMLError:
            looks_typed = False
        kind = "a string" if looks_typed else None
    return f"got {show(v)}" + (f" ({kind})" if kind else "")


def error(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}".replace("\n", " "))


def join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def did_you_mean(word: str, choices: Sequence[str], cutoff: float = 0.6) -> str | None:
    """The closest choice (difflib), or one that the word starts with ('evaluation': 'eval')."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    if close:
        return close[0]
    prefixes = [c for c in choices if len(c) >= 3 and (word.startswith(c) or c.startswith(word))]
    return max(prefixes, key=len) if prefixes and len(word) >= 3 else None


def unknown_key(prefix: str, key: Any, allowed: Sequence[str], everywhere: Sequence[str],
                context: str = "") -> ConfigError:
    """'PATH: unknown key; did you mean ...?' looking first among siblings (``allowed``), then
    among the full paths of every key (``everywhere``)."""
    path = join(prefix, key)
    guess = did_you_mean(str(key), allowed)
    suggestion = join(prefix, guess) if guess else None
    if suggestion is None:
        leaves = {p.rsplit(".", 1)[-1]: p for p in everywhere}
        guess = did_you_mean(str(key), list(leaves), cutoff=0.8)
        suggestion = leaves[guess] if guess else None
    if suggestion is not None and suggestion != path:
        return error(path, f"unknown key{context}; did you mean '{suggestion}'?")
    where = f" under '{prefix}'" if prefix else ""
    return error(path, f"unknown key{context}; the keys{where} are {', '.join(allowed)}")


# --------------------------------------------------------------------------------------------
# Value checks. Each returns the normalized value or raises one ConfigError.


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def integer(v: Any, path: str, minimum: int, maximum: int | None = None, why: str = "") -> int:
    """An int (not bool) >= ``minimum`` and, if given, <= ``maximum``; ``why`` explains the
    maximum, e.g. ' (seeds are uint32)'."""
    if not is_int(v) or v < minimum or (maximum is not None and v > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]{why}"
        raise error(path, f"{got(v)}, expected an integer {allowed}")
    return v


def is_finite(v: int | float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float, e.g. 10**400 written out in full
        return False


# The engine holds learning rates, weight decays, momentum and init scales in float32, and a
# loss's parameters in the model's precision (float32 unless model.dtype is float64). Every
# check of what that precision makes of a number is here: its range (number) and its
# duplicates (grid) are judged on the value the engine will hold, not on the YAML float64.
def held(x: float, dtype: str = "float32") -> float:
    """``x`` as the engine holds it in ``dtype`` ('float32' or 'float64')."""
    with np.errstate(over="ignore"):
        return float(np.asarray(x, dtype))


def precision_loss(x: float, dtype: str) -> str | None:
    """What ``dtype`` makes of ``x`` if it does not hold it as 0 or a finite normal number."""
    f = held(x, dtype)
    if f == 0:
        return "rounds to 0" if x != 0 else None
    if math.isinf(f):
        return "rounds to inf"
    if abs(f) < np.finfo(dtype).tiny:
        return "keeps only as a subnormal, losing precision"
    return None


def _which(dtype: str) -> str:
    return f"which {dtype} (the precision the engine trains with)"


def number(
    v: Any, path: str, expected: str, ok: Callable[[float], bool], dtype: str | None = None
) -> float:
    """A finite int or float (not bool) satisfying ``ok``; ``expected`` says what is allowed.

    ``dtype`` ('float32', 'float64'): the engine holds the value in that precision,
    so a value that it would turn into 0, inf or a subnormal, or into one outside ``ok``
    (0.99999999 is 1 in float32), is refused too; the run would silently train with
    something else.
    """
    if not is_number(v) or not is_finite(v) or not ok(float(v)):
        raise error(path, f"{got(v)}, expected {expected}")
    x = float(v)
    if dtype is None:
        return x
    if loss := precision_loss(x, dtype):
        info = np.finfo(dtype)
        zero = "0 or " if ok(0.0) else ""
        allowed = (
            f"{zero}a number in [{info.tiny:.2g}, {info.max:.2g}]"
            if ok(float(info.max))
            else f"{expected}: {zero}at least {info.tiny:.2g}"  # e.g. momentum, below 1
        )
        raise error(path, f"{got(v)}, {_which(dtype)} {loss}; expected {allowed}")
    if not ok(held(x, dtype)):
        raise error(path, f"{got(v)}, {_which(dtype)} holds as {held(x, dtype)!r}; expected "
                          f"{expected} in {dtype}")
    return x


# Learning rates, weight decays and init scales: the engine holds them in float32.


def positive(v: Any, path: str) -> float:
    return number(v, path, "a number > 0", lambda x: x > 0, dtype="float32")


def non_negative(v: Any, path: str) -> float:
    return number(v, path, "a number >= 0", lambda x: x >= 0, dtype="float32")


def choice(v: Any, path: str, choices: Collection[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        hint = ""
        if isinstance(v, str) and (guess := did_you_mean(v, list(choices))):
            hint = f"; did you mean '{guess}'?"
        raise error(path, f"{got(v)}, expected one of {', '.join(choices)}{hint}")
    return v


def string(v: Any, path: str, expected: str = "a non-empty string") -> str:
    if not isinstance(v, str) or not v.strip():
        raise error(path, f"{got(v)}, expected {expected}")
    return v


def boolean(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise error(path, f"{got(v)}, expected true or false")
    return v


def grid(
    v: Any, path: str, item: Callable[[Any, str], Any], expected: str, scalar_ok: bool = True,
    dtype: str | None = None,
) -> tuple:
    """A swept value: a non-empty list without duplicates (a scalar is a one-element list);
    with ``dtype``, numbers that the engine holds as one value in it are duplicates too."""
    if isinstance(v, list | tuple):
        if not v:
            raise error(path, f"got [], expected a non-empty list of {expected}")
        items = [item(x, f"{path}[{i}]") for i, x in enumerate(v)]
    elif scalar_ok and v is not None and not isinstance(v, dict):
        return (item(v, path),)
    else:
        raise error(path, f"{got(v)}, expected a list of {expected}")
    first: dict[Any, int] = {}  # value -> its first index: one pass, not a pass per value
    for i, x in enumerate(items):
        j = first.setdefault(held(x, dtype) if dtype else x, i)
        if j != i:
            same = "," if items[j] == x else f", {_which(dtype)} holds as {show(v[j])},"
            raise error(
                f"{path}[{i}]",
                f"got {show(v[i])}{same} a duplicate of {path}[{j}]; each value may appear once",
            )
    return tuple(items)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def control_character(text: str) -> str | None:
    """The first control character in ``text`` (newline, tab, ...) as Python writes it."""
    m = _CONTROL_RE.search(text)
    return repr(m.group())[1:-1] if m else None


def path_string(v: Any, path: str, expected: str) -> str:
    """A folder path: a non-empty string without control characters. A newline in a path is
    never meant (YAML folds one in a plain scalar into a space, so results would land
    somewhere else than the user sees), and messages naming such a path mislead."""
    v = string(v, path, expected)
    if (c := control_character(v)) is not None:
        raise error(path, f"{got(v)}, which holds the control character {c}; expected "
                          f"{expected} without control characters")
    return v


def _walk_key(prefix: str, key: Any) -> str:
    """The path of a mapping's entry for a message, kept short (a cycle repeats keys)."""
    if prefix.count(".") >= 4:
        return prefix
    return join(prefix, key[:40] if isinstance(key, str) else show(key, 40))


def check_size(value: Any, where: str) -> None:
    """Refuses a value past the bounds above (MAX_LIST, MAX_VALUES, MAX_DEPTH) with one line
    naming the key where it was found.

    The walk is iterative (no recursion limit), counts a shared list or mapping, as YAML
    aliases make, once per reference (as every later check would see it), and stops at the
    first bound it passes: linear in the value's size, and never past MAX_VALUES steps.
    """
    stack = [(value, 0, where)]
    count = 0
    while stack:
        x, depth, key = stack.pop()
        shown = key or "config"
        count += 1
        if count > MAX_VALUES:
            raise error(shown, f"holds more than {MAX_VALUES:,} values once YAML aliases (*name) "
                               "are expanded; a config holds a few hundred: write the values "
                               "out, or repeat fewer")
        if not isinstance(x, list | tuple | dict):
            continue
        if depth >= MAX_DEPTH:
            raise error(shown, f"lists or mappings nested more than {MAX_DEPTH} levels deep; a "
                               "config nests a few (model.hidden: [[64, 64]] is two)")
        if len(x) > MAX_LIST:
            raise error(shown, f"got a {'mapping' if isinstance(x, dict) else 'list'} of "
                               f"{len(x):,} entries; at most {MAX_LIST:,} are accepted (a sweep "
                               "trains every combination of its swept lists)")
        if isinstance(x, dict):
            stack.extend((k, depth + 1, key) for k in x)
            stack.extend((v, depth + 1, _walk_key(key, k)) for k, v in x.items())
        else:
            stack.extend((v, depth + 1, key) for v in x)


# --------------------------------------------------------------------------------------------
# --set


def read_override(text: str) -> tuple[str, Any]:
    """One ``--set KEY=VALUE``: the dotted key, stripped, and the value read as YAML, within
    the bounds above. Where the value goes is the schema's business."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(
            f"--set {show(text)}: expected KEY=VALUE, e.g. --set epochs=5 "
            "or --set optimizer.learning_rate.mse=[0.1,0.3]"
        )
    # The key ends at the first '=' outside parentheses: a loss's label is a key, and it
    # holds its parameters' '=' (optimizer.learning_rate.focal(gamma=2)=[0.1]).
    depth, cut = 0, text.index("=")
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "=" and depth <= 0:
            cut = i
            break
    key, value_text = text[:cut].strip(), text[cut + 1:]
    if len(text) > MAX_CONFIG_BYTES:
        raise error(key[:80], f"--set of {len(text):,} characters; at most {MAX_CONFIG_BYTES:,}"
                              " are read (put a long value in the config file)")
    context = f" in --set {show(text)}"
    if not key:
        raise ConfigError(f"--set {show(text)}: the key before '=' is empty; expected KEY=VALUE")
    if (c := control_character(text)) is not None:
        raise error(key[:80], f"--set {show(text)} holds the control character {c}; YAML "
                              "would fold or drop it silently: remove it")
    try:
        value = read_yaml(value_text)
    except yaml.YAMLError as e:
        raise error(
            key, f"value {show(value_text)}{context} is not valid YAML ({yaml_problem(e)})"
        ) from None
    except Unreadable as e:
        raise error(key, f"value {show(value_text)}{context}: {e}") from None
    check_size(value, key)
    return key, value
