"""Logging set-up and the scalar log of a training run (MemCNN's memcnn.utils.log).

SummaryWriter keeps MemCNN's format, which its users' scripts read: LOG_DIR/scalars.json, a JSON
object mapping each scalar's name to a list of [wall time, iteration, value]."""

import json
import logging
import os
import sys
import time


def setup(use_stdout=True, filename=None, log_level=logging.DEBUG):
    """Sends the root logger's records at log_level and above to stdout and/or the file `filename`,
    formatted as "yy-mm-dd HH:MM:SS [logger name] message"."""
    root = logging.getLogger('')
    root.setLevel(log_level)
    formatter = logging.Formatter("%(asctime)s [%(name)-15s] %(message)s", datefmt="%y-%m-%d %H:%M:%S")
    handlers = []
    if use_stdout:
        handlers.append(logging.StreamHandler(sys.stdout))
    if filename is not None:
        handlers.append(logging.FileHandler(filename))
    for handler in handlers:
        handler.setLevel(log_level)
        handler.setFormatter(formatter)
        root.addHandler(handler)


class SummaryWriter(object):
    """The scalars of a run in LOG_DIR/scalars.json; those already there (an earlier run) are kept
    and added to.

    Args:
        log_dir (str): the folder of scalars.json (it must exist when the file is written).
    """

    def __init__(self, log_dir):
        self._log_dir = log_dir
        self._log_file = os.path.join(log_dir, "scalars.json")
        self._summary = {}
        self._load_if_exists()

    def _load_if_exists(self):
        if os.path.exists(self._log_file):
            with open(self._log_file, "r") as f:
                self._summary = json.load(f)

    def add_scalar(self, name, value, iteration):
        """Records value (a float) of the scalar `name` at `iteration`, with the wall time; written by
        :meth:`flush` or :meth:`close`."""
        self._summary.setdefault(name, []).append([time.time(), int(iteration), float(value)])

    def flush(self):
        """Writes every scalar so far, atomically: a run killed while writing leaves the previous file."""
        temporary = "{}.tmp.{}".format(self._log_file, os.getpid())
        with open(temporary, "w") as f:
            json.dump(self._summary, f)
        os.replace(temporary, self._log_file)

    def close(self):
        """Writes the scalars (:meth:`flush`)."""
        self.flush()
