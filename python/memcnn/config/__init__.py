"""memcnn.config (MemCNN's): Config, the user's settings for `python -m memcnn.train`, read from
config.json in this folder: {"data_dir": ..., "results_dir": ...} (config.json.example shows the
form). The experiments file of `python -m memcnn.train` is experiments.json here."""

import json
import os


class Config(dict):
    """The user's settings for ``python -m memcnn.train``: a dict read from config.json.

    Args:
        dic (dict, optional): the settings; None reads them from :meth:`get_filename`.
        verbose (bool): print which file is read.

    Raises:
        OSError: when dic is None and config.json cannot be read.
        json.JSONDecodeError: when config.json is not JSON.
    """

    def __init__(self, dic=None, verbose=False):
        """A dict of the settings: `dic` when given, else the contents of get_filename()."""
        super(Config, self).__init__()
        if dic is None:
            filename = self.get_filename()
            if verbose:
                print("loading default {0}".format(filename))
            with open(filename, "r") as f:
                dic = json.load(f)
        self.update(dic)

    @staticmethod
    def get_filename():
        """Returns the path of config.json in the package's config folder (:meth:`get_dir`)."""
        return os.path.join(Config.get_dir(), "config.json")

    @staticmethod
    def get_dir():
        """Returns the folder of memcnn.config: where config.json and experiments.json are."""
        return os.path.dirname(__file__)
