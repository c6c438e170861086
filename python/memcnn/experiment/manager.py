"""ExperimentManager (MemCNN's): an experiment's folder and its checkpoints, in MemCNN's layout,
which its users' scripts read:

    EXPERIMENT_DIR/state/model/ITERATION.pt       model.state_dict()
    EXPERIMENT_DIR/state/optimizer/ITERATION.pt   optimizer.state_dict()
    EXPERIMENT_DIR/log/scalars.json               memcnn.utils.log.SummaryWriter's scalars

Checkpoints are written atomically (to a temporary file, then renamed), so a run killed while
saving leaves the previous checkpoints intact, and they load onto whatever device the model is on."""

import glob
import logging
import os
import shutil

import torch


class ExperimentManager(object):
    """An experiment's folders and its model and optimizer checkpoints, in MemCNN's layout.

    Args:
        experiment_dir (str): the experiment's folder (EXPERIMENT_DIR above).
        model (torch.nn.Module, optional): the model whose state is saved and loaded.
        optimizer (torch.optim.Optimizer, optional): the optimizer whose state is saved and loaded.

    Attributes:
        model_dir (str): EXPERIMENT_DIR/state/model.
        optim_dir (str): EXPERIMENT_DIR/state/optimizer.
        log_dir (str): EXPERIMENT_DIR/log.
        dirs (tuple): the experiment folder and the three above.
    """

    def __init__(self, experiment_dir, model=None, optimizer=None):
        self.logger = logging.getLogger(type(self).__name__)
        self.experiment_dir = experiment_dir
        self.model = model
        self.optimizer = optimizer
        self.model_dir = os.path.join(experiment_dir, "state", "model")
        self.optim_dir = os.path.join(experiment_dir, "state", "optimizer")
        self.log_dir = os.path.join(experiment_dir, "log")
        self.dirs = (self.experiment_dir, self.model_dir, self.log_dir, self.optim_dir)

    def make_dirs(self):
        """Creates the experiment's folders (:attr:`dirs`); existing ones are kept."""
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)

    def delete_dirs(self):
        """Deletes the experiment's folders and everything in them."""
        for d in self.dirs:
            if os.path.exists(d):
                shutil.rmtree(d)

    def any_dir_exists(self):
        """Returns True when any of the experiment's folders exists."""
        return any(os.path.exists(d) for d in self.dirs)

    def all_dirs_exists(self):
        """Returns True when all of the experiment's folders exist."""
        return all(os.path.exists(d) for d in self.dirs)

    @staticmethod
    def _save(state, filename):
        temporary = "{}.tmp.{}".format(filename, os.getpid())
        try:
            torch.save(state, temporary)
            os.replace(temporary, filename)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    @staticmethod
    def _load(filename):
        if not os.path.exists(filename):
            raise FileNotFoundError("no checkpoint {}".format(filename))
        return torch.load(filename, map_location="cpu")

    def save_model_state(self, epoch):
        """Writes model.state_dict() to state/model/EPOCH.pt, atomically.

        Args:
            epoch (int): the iteration the checkpoint is named after (MemCNN's naming).
        """
        filename = os.path.join(self.model_dir, "{}.pt".format(epoch))
        self.logger.info("Saving model state to: {}".format(filename))
        self._save(self.model.state_dict(), filename)

    def load_model_state(self, epoch):
        """Loads state/model/EPOCH.pt into the model.

        Args:
            epoch (int): the iteration of the checkpoint.

        Raises:
            FileNotFoundError: when there is no such checkpoint.
        """
        filename = os.path.join(self.model_dir, "{}.pt".format(epoch))
        self.logger.info("Loading model state from: {}".format(filename))
        self.model.load_state_dict(self._load(filename))

    def save_optimizer_state(self, epoch):
        """Writes optimizer.state_dict() to state/optimizer/EPOCH.pt, atomically.

        Args:
            epoch (int): the iteration the checkpoint is named after.
        """
        filename = os.path.join(self.optim_dir, "{}.pt".format(epoch))
        self.logger.info("Saving optimizer state to: {}".format(filename))
        self._save(self.optimizer.state_dict(), filename)

    def load_optimizer_state(self, epoch):
        """Loads state/optimizer/EPOCH.pt into the optimizer.

        Args:
            epoch (int): the iteration of the checkpoint.

        Raises:
            FileNotFoundError: when there is no such checkpoint.
        """
        filename = os.path.join(self.optim_dir, "{}.pt".format(epoch))
        self.logger.info("Loading optimizer state from {}".format(filename))
        self.optimizer.load_state_dict(self._load(filename))

    def save_train_state(self, epoch):
        """Saves the model's and the optimizer's state of iteration `epoch` (both methods above)."""
        self.save_model_state(epoch)
        self.save_optimizer_state(epoch)

    def load_train_state(self, epoch):
        """Loads the model's and the optimizer's state of iteration `epoch`.

        Raises:
            FileNotFoundError: when either checkpoint is missing.
        """
        self.load_model_state(epoch)
        self.load_optimizer_state(epoch)

    def get_last_model_iteration(self):
        """The highest ITERATION of the model checkpoints, 0 when there are none."""
        iterations = [0]
        for path in glob.glob(os.path.join(self.model_dir, "*.pt")):
            stem = os.path.basename(path)[:-len(".pt")]
            if stem.isdigit():
                iterations.append(int(stem))
        return max(iterations)

    def load_last_train_state(self):
        """Loads the train state of :meth:`get_last_model_iteration`.

        Raises:
            FileNotFoundError: when there is no checkpoint (it then looks for iteration 0's).
        """
        self.load_train_state(self.get_last_model_iteration())
