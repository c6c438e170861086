"""memcnn.experiment, memcnn.trainers, memcnn.utils and `python -m memcnn.train`: MemCNN's experiments,
results layout (state/model/N.pt, state/optimizer/N.pt, log/scalars.json) and trainer behaviour,
with a small synthetic CIFAR-10 in place and Debian's Fashion-MNIST, without a download."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

import memcnn
from memcnn.config import Config
from memcnn.data.cifar import CIFAR10, get_cifar_data_loaders
from memcnn.data import fashion_mnist
from memcnn.experiment import factory
from memcnn.experiment.manager import ExperimentManager
from memcnn.models.resnet import ResNet, RevBasicBlock
from memcnn.trainers.classification import train, validate
from memcnn.utils.log import SummaryWriter, setup
from memcnn.utils.loss import CrossEntropyLossTF
from memcnn.utils.stats import AverageMeter, accuracy
from helpers import revnet38_state_keys, write_cifar10

EXPERIMENTS = os.path.join(Config.get_dir(), "experiments.json")


class TinyModel(torch.nn.Module):
    def __init__(self, classes=10, in_channels=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, classes, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


# ---- experiments ----

def test_shipped_experiments_combine_as_memcnns():
    cfg = factory.load_experiment_config(EXPERIMENTS, ["cifar10", "revnet110"])
    assert cfg["model"] == "memcnn.models.resnet.ResNet"
    assert cfg["model_params"] == {"num_classes": 10, "block": "memcnn.models.resnet.RevBasicBlock",
                                   "layers": [9, 9, 9], "channels_per_layer": [32, 32, 64, 128],
                                   "strides": [1, 1, 2, 2], "init_max_pool": False, "init_kernel_size": 3,
                                   "batch_norm_fix": False}
    assert cfg["optimizer_params"] == {"lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4}
    assert cfg["data_loader_params"] == {"dataset": "memcnn.data.cifar.CIFAR10", "workers": 16, "batch_size": 100,
                                         "max_epoch": 80000}
    assert cfg["trainer"] == "memcnn.trainers.classification.train"
    assert cfg["trainer_params"] == {"loss": "memcnn.utils.loss.CrossEntropyLossTF"}
    fashion = factory.load_experiment_config(EXPERIMENTS, ["revnet38", "fashion-mnist"])
    assert fashion["model_params"]["in_channels"] == 1 and fashion["model_params"]["layers"] == [3, 3, 3]


def test_experiment_files_errors_and_list_bases(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"a": {"x": {"p": 1, "q": 2}, "y": 1}, "b": {"x": {"q": 3}, "z": 2},
                                "c": {"base": ["a", "b"], "y": 5}, "loop1": {"base": "loop2"},
                                "loop2": {"base": "loop1"}}))
    cfg = factory.load_experiment_config(str(path), ["c"])
    assert cfg["x"] == {"p": 1, "q": 3} and cfg["y"] == 5 and cfg["z"] == 2
    with pytest.raises(KeyError, match="unknown experiment 'nope'.*defines a, b, c"):
        factory.load_experiment_config(str(path), ["nope"])
    with pytest.raises(RuntimeError, match="Circular dependency found: loop1 -> loop2 -> loop1"):
        factory.load_experiment_config(str(path), ["loop1"])
    assert factory.get_attr_from_module("memcnn.models.resnet.ResNet") is ResNet
    with pytest.raises(ValueError, match="dotted path"):
        factory.get_attr_from_module("ResNet")
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        factory.get_attr_from_module("memcnn.models.resnet.Nope")
    with pytest.raises(KeyError, match="no 'trainer'"):
        factory.experiment_config_parser({"model": "x"}, data_dir=str(tmp_path))


def test_experiment_config_parser_builds_a_cifar_experiment(tmp_path):
    write_cifar10(tmp_path)
    cfg = factory.load_experiment_config(EXPERIMENTS, ["cifar10", "revnet38"])
    cfg["data_loader_params"].update(batch_size=5, max_epoch=3)
    model, optimizer, trainer, params = factory.experiment_config_parser(cfg, data_dir=str(tmp_path), workers=0)
    assert isinstance(model, ResNet) and isinstance(model.layer1[0], RevBasicBlock)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["weight_decay"] == 2e-4
    assert trainer is train and isinstance(params["loss"], CrossEntropyLossTF)
    assert params["train_loader"].num_workers == 0 and len(params["train_loader"]) == 3
    assert isinstance(params["test_loader"].dataset, CIFAR10)


# ---- manager, log, loss, stats ----

def test_manager_layout_atomic_checkpoints_and_last_iteration(tmp_path):
    model = TinyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    manager = ExperimentManager(str(tmp_path / "exp"), model, optimizer)
    manager.make_dirs()
    assert manager.all_dirs_exists()
    for d in ("state/model", "state/optimizer", "log"):
        assert (tmp_path / "exp" / d).is_dir()
    manager.save_train_state(20)
    manager.save_train_state(3)
    (tmp_path / "exp" / "state" / "model" / "7.pt.tmp.123").write_bytes(b"half a file")
    (tmp_path / "exp" / "state" / "model" / "notes.pt").write_bytes(b"")
    assert manager.get_last_model_iteration() == 20
    assert sorted(os.listdir(str(tmp_path / "exp" / "state" / "optimizer"))) == ["20.pt", "3.pt"]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        manager.load_train_state(5)
    manager.delete_dirs()
    assert not manager.any_dir_exists()


def test_summary_writer_format_and_setup(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("train_loss", torch.tensor(0.5), 3)
    writer.close()
    data = json.loads((tmp_path / "scalars.json").read_text())
    [[when, iteration, value]] = data["train_loss"]
    assert isinstance(when, float) and iteration == 3 and value == 0.5
    assert os.listdir(str(tmp_path)) == ["scalars.json"]
    setup(use_stdout=False, filename=str(tmp_path / "log.txt"), log_level=logging.INFO)
    logging.getLogger("memcnn-test").info("hello")
    for handler in list(logging.getLogger("").handlers):
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == str(tmp_path / "log.txt"):
            handler.close()
            logging.getLogger("").removeHandler(handler)
    assert "[memcnn-test    ] hello" in (tmp_path / "log.txt").read_text()


def test_cross_entropy_tf_equals_cross_entropy_and_stays_finite():
    scores = torch.randn(6, 4, requires_grad=True)
    target = torch.randint(0, 4, (6,))
    loss = CrossEntropyLossTF()
    assert torch.allclose(loss(scores, target), torch.nn.functional.cross_entropy(scores, target))
    far = torch.tensor([[0.0, 200.0], [300.0, 0.0]])
    assert torch.isfinite(loss(far, torch.tensor([0, 1])))
    with pytest.raises(AssertionError, match="don't compute the gradient w.r.t. targets"):
        loss(scores, target.float().requires_grad_())


def test_stats():
    meter = AverageMeter()
    meter.update(2.0, n=3)
    meter.update(6.0)
    assert (meter.val, meter.sum, meter.count, meter.avg) == (6.0, 12.0, 4, 3.0)
    output = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    top1, top2 = accuracy(output, torch.tensor([1, 1, 0]), topk=(1, 2))
    assert top1.item() == pytest.approx(100 / 3) and top2.item() == pytest.approx(200 / 3)


# ---- trainer ----

def cifar_experiment(tmp_path, max_epoch, batch_size=4):
    write_cifar10(tmp_path / "data")
    train_loader, test_loader = get_cifar_data_loaders(CIFAR10, str(tmp_path / "data"), max_epoch, batch_size, 0)
    torch.manual_seed(0)
    model = TinyModel()
    manager = ExperimentManager(str(tmp_path / "exp"), model, torch.optim.SGD(model.parameters(), lr=0.01))
    manager.make_dirs()
    return manager, train_loader, test_loader


def test_train_checkpoints_scalars_and_resume(tmp_path):
    manager, train_loader, test_loader = cifar_experiment(tmp_path, max_epoch=6)
    train(manager, train_loader, test_loader, start_iter=0, disp_iter=2, save_iter=3, valid_iter=3,
          loss=CrossEntropyLossTF())
    assert sorted(os.listdir(manager.model_dir)) == ["3.pt", "6.pt"]
    assert sorted(os.listdir(manager.optim_dir)) == ["3.pt", "6.pt"]
    scalars = json.loads(open(os.path.join(manager.log_dir, "scalars.json")).read())
    assert [i for _, i, _ in scalars["train_loss"]] == [2, 4, 6]
    assert [i for _, i, _ in scalars["test_acc"]] == [3, 6]
    assert all(0 <= v <= 100 for _, _, v in scalars["test_acc"])
    assert all(v > 0 for _, _, v in scalars["act_mem_allocation"])  # bytes, as MemCNN records on CUDA
    assert train_loader.sampler.nsamples == 6 * 4  # left as given

    # resuming at 6 of 8: iterations 7 and 8 only, the scalars appended to
    train_loader.sampler.nsamples = 8 * 4
    manager.load_train_state(manager.get_last_model_iteration())
    train(manager, train_loader, test_loader, start_iter=6, disp_iter=1, save_iter=4, valid_iter=100,
          loss=CrossEntropyLossTF())
    scalars = json.loads(open(os.path.join(manager.log_dir, "scalars.json")).read())
    assert [i for _, i, _ in scalars["train_loss"]] == [2, 4, 6, 7, 8]
    assert sorted(os.listdir(manager.model_dir)) == ["3.pt", "6.pt", "8.pt"]

    # nothing left to do
    train(manager, train_loader, test_loader, start_iter=8, loss=CrossEntropyLossTF())


def test_train_stops_on_a_nan_loss(tmp_path):
    manager, train_loader, test_loader = cifar_experiment(tmp_path, max_epoch=4)

    def nan_loss(score, label):
        return score.mean() * float("nan")

    with pytest.raises(ValueError, match="Loss became NaN during iteration 2"):
        train(manager, train_loader, test_loader, start_iter=1, loss=nan_loss)
    assert train_loader.sampler.nsamples == 16


def test_train_saves_the_last_iteration_on_ctrl_c(tmp_path):
    manager, train_loader, test_loader = cifar_experiment(tmp_path, max_epoch=8)
    calls = []

    def interrupted_at_iteration_4(score, label):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return CrossEntropyLossTF()(score, label)

    with pytest.raises(KeyboardInterrupt):
        train(manager, train_loader, test_loader, start_iter=0, save_iter=2, valid_iter=100,
              loss=interrupted_at_iteration_4)
    assert sorted(os.listdir(manager.model_dir)) == ["2.pt", "3.pt"] == sorted(os.listdir(manager.optim_dir))
    assert manager.get_last_model_iteration() == 3


def test_train_needs_a_loss_and_a_counting_sampler(tmp_path):
    manager, train_loader, test_loader = cifar_experiment(tmp_path, max_epoch=2)
    with pytest.raises(ValueError, match="no loss"):
        train(manager, train_loader, test_loader, start_iter=0)
    plain = torch.utils.data.DataLoader(train_loader.dataset, batch_size=4)
    with pytest.raises(ValueError, match="NSamplesRandomSampler"):
        train(manager, plain, test_loader, start_iter=0, loss=CrossEntropyLossTF())


def test_validate(tmp_path):
    manager, _, test_loader = cifar_experiment(tmp_path, max_epoch=1)
    top1, loss = validate(manager.model, CrossEntropyLossTF(), test_loader, torch.device("cpu"))
    assert 0 <= top1 <= 100 and loss > 0 and not manager.model.training


# ---- python -m memcnn.train ----

def quick_experiments(tmp_path, batch_size, iterations, save_iter, valid_iter):
    """The shipped experiments file with the data sets' schedules shortened (and nothing else changed)."""
    experiments = json.loads(open(EXPERIMENTS).read())
    for name in ("cifar10", "fashion-mnist"):
        experiments[name]["data_loader_params"].update(batch_size=batch_size, max_epoch=iterations)
        experiments[name]["trainer_params"] = {"loss": "memcnn.utils.loss.CrossEntropyLossTF", "disp_iter": 1,
                                               "save_iter": save_iter, "valid_iter": valid_iter}
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps(experiments))
    return str(path)


def run_train(tmp_path, *arguments):
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "memcnn.train"] + list(arguments), cwd=str(tmp_path),
                          env=environment, capture_output=True, text=True, timeout=600)


def check_first_checkpoint(results, name, iteration, classes, in_channels):
    folder = os.path.join(results, name)
    assert sorted(os.listdir(folder)) == ["log", "state"]
    assert sorted(os.listdir(os.path.join(folder, "state"))) == ["model", "optimizer"]
    state = torch.load(os.path.join(folder, "state", "model", "{}.pt".format(iteration)))
    for key in revnet38_state_keys():
        assert key in state
    model = ResNet(RevBasicBlock, [3, 3, 3], num_classes=classes, channels_per_layer=[32, 32, 64, 112],
                   strides=[1, 1, 2, 2], init_kernel_size=3, batch_norm_fix=False, in_channels=in_channels)
    model.load_state_dict(state)
    optimizer_state = torch.load(os.path.join(folder, "state", "optimizer", "{}.pt".format(iteration)))
    assert optimizer_state["param_groups"][0]["lr"] == 0.1
    scalars = json.loads(open(os.path.join(folder, "log", "scalars.json")).read())
    assert [i for _, i, _ in scalars["train_loss"]][:iteration] == list(range(1, iteration + 1))
    return scalars


def test_train_program_revnet38_cifar10_first_checkpoint_and_resume(tmp_path):
    """`python -m memcnn.train revnet38 cifar10` with CIFAR-10 in place (synthetic, in the python
    version's layout) and the schedule shortened by the experiments file: MemCNN's layout at the first
    checkpoint; a rerun continues from it, --fresh starts over."""
    write_cifar10(tmp_path / "data", per_batch=4, test=8)
    (tmp_path / "results").mkdir()
    experiments = quick_experiments(tmp_path, batch_size=4, iterations=4, save_iter=2, valid_iter=2)
    common = ["revnet38", "cifar10", "--no-cuda", "--workers", "0", "--experiments-file", experiments,
              "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results")]
    result = run_train(tmp_path, *common)
    assert result.returncode == 0, result.stdout + result.stderr
    scalars = check_first_checkpoint(str(tmp_path / "results"), "revnet38_cifar10", 2, 10, 3)
    assert [i for _, i, _ in scalars["test_acc"]] == [2, 4]
    assert "ActMem" in result.stdout and "MiB" in result.stdout
    models = tmp_path / "results" / "revnet38_cifar10" / "state" / "model"
    assert sorted(os.listdir(str(models))) == ["2.pt", "4.pt"]

    os.remove(str(models / "4.pt"))
    result = run_train(tmp_path, *common)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Continue experiment from iteration: 2" in result.stdout
    assert "iteration: [3/4]" in result.stdout and "iteration: [1/4]" not in result.stdout

    result = run_train(tmp_path, *(common + ["--fresh"]))
    assert result.returncode == 0 and "iteration: [1/4]" in result.stdout


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed (scripts/install-deps.sh installs it)")
def test_train_program_revnet38_fashion_mnist_without_a_download(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "results").mkdir()
    experiments = quick_experiments(tmp_path, batch_size=8, iterations=2, save_iter=2, valid_iter=1000)
    result = run_train(tmp_path, "revnet38", "fashion-mnist", "--no-cuda", "--workers", "0",
                       "--experiments-file", experiments, "--data-dir", str(tmp_path / "data"),
                       "--results-dir", str(tmp_path / "results"))
    assert result.returncode == 0, result.stdout + result.stderr
    check_first_checkpoint(str(tmp_path / "results"), "revnet38_fashion-mnist", 2, 10, 1)
    assert os.listdir(str(tmp_path / "data")) == []  # read from Debian's package, nothing downloaded


def test_train_program_messages(tmp_path):
    result = run_train(tmp_path, "revnet38", "cifar10")
    if not os.path.exists(Config.get_filename()):
        assert result.returncode == 1 and "--data-dir DIR --results-dir DIR" in result.stdout
    (tmp_path / "d").mkdir()
    result = run_train(tmp_path, "revnet38", "imagenet", "--data-dir", str(tmp_path / "d"), "--results-dir",
                       str(tmp_path / "d"))
    assert result.returncode == 1 and "unknown experiment 'imagenet'" in result.stderr
    assert memcnn.__version__.startswith("1.5.2")
