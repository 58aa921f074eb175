"""glog-style log lines for crema's `logging` output, so Caffe's log tools (parse_log.py,
plot_training_log.py) read crema's training logs:

    I1126 23:01:02.345678 12345 base.py:123] Iteration 100 (12.3 iter/s, 8.1s/100 iters), loss = 0.5

Severity letter (I, W, E, F; DEBUG prints as I, as glog's VLOG does), month and day, local time with
microseconds, the process id (glog prints the thread id; one per process here), file:line.

    import engine.logs
    engine.logs.install_glog_format()        # on the "crema" logger, to stderr

The handler is added to the given logger only (default: the "crema" logger that the solver uses);
the logger's propagation is left alone, so a root handler configured elsewhere also sees the
records.
"""
import logging
import os
import sys
import time

def severity_letter(levelno):
    if levelno >= logging.CRITICAL:
        return "F"
    if levelno >= logging.ERROR:
        return "E"
    if levelno >= logging.WARNING:
        return "W"
    return "I"


class GlogFormatter(logging.Formatter):
    """Formats a record as glog does; continuation lines of a multi-line message follow as is."""

    def format(self, record):
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        t = time.localtime(record.created)
        micros = int((record.created - int(record.created)) * 1e6)
        return (f"{severity_letter(record.levelno)}{t.tm_mon:02d}{t.tm_mday:02d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros:06d} "
                f"{record.process or os.getpid():5d} {record.filename}:{record.lineno}] {message}")


def install_glog_format(logger=None, stream=None, level=logging.INFO):
    """Add a stream handler with GlogFormatter to `logger` (a Logger or a name; default the
    "crema" logger), writing to `stream` (default sys.stderr at the time of the call). The
    logger's level is lowered to `level` when it is unset or higher. Installing twice on the
    same logger and stream replaces nothing and adds nothing. Returns the handler."""
    if logger is None or isinstance(logger, str):
        logger = logging.getLogger(logger or "crema")
    stream = sys.stderr if stream is None else stream
    for handler in logger.handlers:
        if getattr(handler, "_crema_glog", False) and getattr(handler, "stream", None) is stream:
            return handler
    handler = logging.StreamHandler(stream)
    handler.setFormatter(GlogFormatter())
    handler._crema_glog = True
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return handler
