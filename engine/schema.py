"""Reading Caffe's text and binary protobuf files, with errors that name file:line:column.

Every entry point takes a path, a text string or an already-built message, so `engine.Net` and the
solvers accept the same things pycaffe does and a little more."""
import os
import re
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from . import crema_pb2
from .errors import CremaError, PrototxtError

_NAME = re.compile(r'\bname\s*:\s*"((?:[^"\\]|\\.)*)"')
_OPEN = re.compile(r'\b(layers?)\s*:?\s*\{')


class Source:
    """Where a message came from: its path (or '<string>') and, for nets, the line of each layer."""

    def __init__(self, path=None, text=None):
        self.path = str(path) if path is not None else None
        self.layer_lines = _layer_lines(text) if text else {}

    @property
    def label(self):
        return self.path or "<string>"

    def where(self, layer_name=None):
        """'file:line: ' prefix for messages about `layer_name` (or just 'file: ')."""
        line = self.layer_lines.get(layer_name)
        return f"{self.label}:{line}: " if line else f"{self.label}: "


def _layer_lines(text):
    """Map each layer name to the line of its `name:` inside a top-level layer/layers block.
    A light scan (braces inside strings are rare in prototxt and only cost a line number)."""
    lines = {}
    depth, in_layer = 0, False
    for lineno, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        if depth == 0 and _OPEN.search(code):
            in_layer = True
        if in_layer and depth <= 1:
            m = _NAME.search(code)
            if m and m.group(1) not in lines:
                lines[m.group(1)] = lineno
        depth += code.count("{") - code.count("}")
        if depth <= 0:
            depth, in_layer = 0, False
    return lines


def _looks_like_path(s):
    return "\n" not in s and "{" not in s and ":" not in s.replace(os.sep, "")[2:]


def read_text(source, message_cls):
    """Parse a text-format message from a path, a text string or a message of the same type.
    Returns (message, Source)."""
    if isinstance(source, message_cls):
        msg = message_cls()
        msg.CopyFrom(source)
        return msg, Source()
    if isinstance(source, Path) or (isinstance(source, str) and (os.path.exists(source)
                                                                 or _looks_like_path(source))):
        path = str(source)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise PrototxtError("file not found", path) from None
        except OSError as exc:
            raise PrototxtError(f"cannot read file: {exc.strerror or exc}", path) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise PrototxtError("not a text prototxt (invalid UTF-8; is it a binary file?)",
                                path, line) from None
    elif isinstance(source, str):
        path, text = None, source
    else:
        raise CremaError(f"expected a path, prototxt text or {message_cls.__name__}, "
                         f"got {type(source).__name__}")
    return parse_text(text, message_cls, path), Source(path, text)


def parse_text(text, message_cls, path=None):
    msg = message_cls()
    try:
        # Parse, not Merge: like Caffe's TextFormat::Parse it refuses a non-repeated field given
        # twice (Merge would silently keep the last one)
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        line, col = exc.GetLine(), exc.GetColumn()
        message = str(exc)
        # protobuf prefixes "line:col : "; we put our own file:line:col in front.
        message = re.sub(r"^\d+:\d+\s*:\s*", "", message)
        raise PrototxtError(message, path, line, col) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise PrototxtError(f"invalid prototxt: {exc}", path) from None
    return msg


def read_binary(path, message_cls, error_cls=CremaError):
    """Parse a binary protobuf file; any failure becomes `error_cls` naming the file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise error_cls(f"{path}: cannot read: {exc.strerror or exc}") from None
    msg = message_cls()
    try:
        msg.ParseFromString(raw)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise error_cls(f"{path}: not a valid binary {message_cls.__name__} "
                        f"(truncated or corrupt?): {exc}") from None
    return msg


def read_net_param(source):
    return read_text(source, crema_pb2.NetParameter)


def read_solver_param(source):
    return read_text(source, crema_pb2.SolverParameter)
