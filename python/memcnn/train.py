"""python -m memcnn.train EXPERIMENT [EXPERIMENT ...] [--fresh] [--no-cuda] [--workers N]
                          [--data-dir D] [--results-dir R] [--experiments-file F]

MemCNN's training program: runs the combination of the named experiments of the experiments file
(default: memcnn/config/experiments.json), for instance `revnet38 cifar10` (models resnet32,
resnet110, resnet164, revnet38, revnet110, revnet164; data sets cifar10, cifar100 and, beyond MemCNN,
fashion-mnist). Results go to RESULTS_DIR/<the names joined by _>/ in MemCNN's layout
(state/model/N.pt, state/optimizer/N.pt, log/scalars.json); a rerun continues from the last
checkpoint unless --fresh.

data_dir and results_dir come from memcnn/config/config.json (memcnn.config.Config), as in MemCNN;
here --data-dir and --results-dir given on the command line stand in for it. Both folders must exist.

Differences from MemCNN 1.5.2: --workers defaults to min(16, CPU cores) (MemCNN: 16);
experiments_file=None in run_experiment means the default file; Ctrl-C saves the last completed
iteration (memcnn.trainers.classification.train) and exits with status 130."""

import argparse
import logging
import os
import sys

import torch

import memcnn.utils.log
from memcnn.config import Config
from memcnn.experiment.factory import experiment_config_parser, load_experiment_config
from memcnn.experiment.manager import ExperimentManager

logger = logging.getLogger('train')

DEFAULT_EXPERIMENTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config', 'experiments.json')


def run_experiment(experiment_tags, data_dir, results_dir, start_fresh=False, use_cuda=False, workers=None,
                   experiments_file=None, *args, **kwargs):
    """Builds the experiment experiment_tags describe and trains it, continuing from the last checkpoint
    in results_dir/<tags joined by _> unless start_fresh; extra keyword arguments go to the trainer
    (disp_iter, save_iter, valid_iter, ...)."""
    if not os.path.exists(data_dir):
        raise RuntimeError('Cannot find data_dir directory: {}'.format(data_dir))
    if not os.path.exists(results_dir):
        raise RuntimeError('Cannot find results_dir directory: {}'.format(results_dir))
    if experiments_file is None:
        experiments_file = DEFAULT_EXPERIMENTS_FILE

    cfg = load_experiment_config(experiments_file, experiment_tags)
    logger.info(cfg)
    model, optimizer, trainer, trainer_params = experiment_config_parser(cfg, workers=workers, data_dir=data_dir)

    manager = ExperimentManager(os.path.join(results_dir, '_'.join(experiment_tags)), model, optimizer)
    if start_fresh:
        logger.info('Starting fresh option enabled. Clearing all previous results...')
        manager.delete_dirs()
    manager.make_dirs()

    if use_cuda:
        manager.model = manager.model.cuda()
        torch.backends.cudnn.benchmark = True

    last_iter = manager.get_last_model_iteration()
    if last_iter > 0:
        logger.info('Continue experiment from iteration: {}'.format(last_iter))
        manager.load_train_state(last_iter)

    trainer_params.update(kwargs)
    trainer(manager, start_iter=last_iter, use_cuda=use_cuda, *args, **trainer_params)


def _parser(data_dir, results_dir, use_cuda):
    workers = min(16, os.cpu_count() or 1)
    parser = argparse.ArgumentParser(description='Run memcnn experiments.')
    parser.add_argument('experiment_tags', type=str, nargs='+',
                        help='Experiment tags to run and combine from the experiment config file')
    parser.add_argument('--workers', dest='workers', type=int, default=workers,
                        help='Number of workers for data loading (Default: {})'.format(workers))
    parser.add_argument('--results-dir', dest='results_dir', type=str, default=results_dir,
                        help='Directory for storing results (Default: {})'.format(results_dir))
    parser.add_argument('--data-dir', dest='data_dir', type=str, default=data_dir,
                        help='Directory for input data (Default: {})'.format(data_dir))
    parser.add_argument('--experiments-file', dest='experiments_file', type=str, default=DEFAULT_EXPERIMENTS_FILE,
                        help='Experiments file (Default: {})'.format(DEFAULT_EXPERIMENTS_FILE))
    parser.add_argument('--fresh', dest='start_fresh', action='store_true', default=False,
                        help='Start with fresh experiment, clears all previous results (Default: False)')
    parser.add_argument('--no-cuda', dest='use_cuda', action='store_false', default=use_cuda,
                        help='Always disables GPU use (Default: use when available)')
    return parser


def main(data_dir, results_dir):
    """Parses sys.argv (see the module's description) and runs the experiment."""
    memcnn.utils.log.setup(True)
    cuda_available = torch.cuda.is_available()
    args = _parser(data_dir, results_dir, cuda_available).parse_args()
    if not cuda_available:
        logger.warning('CUDA is not available in the current configuration!!!')
    if not args.use_cuda:
        logger.warning('CUDA is disabled!!!')
    run_experiment(args.experiment_tags, args.data_dir, args.results_dir, start_fresh=args.start_fresh,
                   experiments_file=args.experiments_file, use_cuda=args.use_cuda, workers=args.workers)


def _configured_dirs(argv):
    """data_dir and results_dir: the command line's, else config.json's; None where neither has one."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--data-dir', dest='data_dir', default=None)
    pre.add_argument('--results-dir', dest='results_dir', default=None)
    given, _ = pre.parse_known_args(argv)
    config = {}
    if os.path.exists(Config.get_filename()):
        config = Config()
    return given.data_dir or config.get('data_dir'), given.results_dir or config.get('results_dir')


def _explain_config():
    print('The configuration file was not set correctly.\n')
    print('Please create a configuration file (json) at:\n {}\n'.format(Config.get_filename()))
    print('formatted as follows:\n\n{\n    "data_dir": "/home/user/data",\n'
          '    "results_dir": "/home/user/experiments"\n}\n')
    print('data_dir    : location for storing the input training datasets')
    print('results_dir : location for storing the experiment files during training')
    print('\nor give both on the command line: --data-dir DIR --results-dir DIR')


def _cli(argv):
    data_dir, results_dir = _configured_dirs(argv)
    if '-h' not in argv and '--help' not in argv and (data_dir is None or results_dir is None):
        _explain_config()
        return 1
    try:
        main(data_dir=data_dir, results_dir=results_dir)
    except (KeyError, RuntimeError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print('memcnn.train: {}'.format(message), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('memcnn.train: interrupted; rerun the same command to continue from the last checkpoint',
              file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(_cli(sys.argv[1:]))
