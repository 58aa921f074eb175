"""crema's one exception family. Every message says what is wrong and where: file:line:column for
syntax errors; layer name, type and blob (with both shapes) for graph errors."""


class CremaError(Exception):
    """Base class of every error crema raises on bad input."""


class PrototxtError(CremaError):
    """A text-format file that does not parse (syntax, unknown field, bad value)."""

    def __init__(self, message, path=None, line=None, column=None):
        self.path, self.line, self.column = path, line, column
        where = path or "<string>"
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


class LayerError(CremaError):
    """A layer's parameters or bottom shapes are invalid. Raised by layers with `layer.error(...)`,
    which prefixes the layer's name, type and, where known, its file and line."""


class UnknownLayerError(CremaError):
    """A layer type that is not registered; the message lists the known ones."""


class NetError(CremaError):
    """A graph problem: missing bottom, duplicate top, bad sharing, bad input shapes."""


class ShapeError(NetError):
    """Two shapes that must agree do not; the message gives both."""


class WeightsError(CremaError):
    """A weights file that cannot be read or does not fit the net (names file, layer, blob index)."""


class SolverError(CremaError):
    """A solver definition or state that cannot be used."""
