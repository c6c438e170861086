"""Experiments files (MemCNN's format): a JSON object of named experiments, each a dict that may
name a "base" experiment whose settings it extends (nested dicts are merged key by key, anything
else replaced). An experiment to run is the merge of several names in order, for instance
["cifar10", "revnet38"]; experiment_config_parser then builds what it describes, naming classes and
functions by their dotted paths ("memcnn.models.resnet.ResNet")."""

import copy
import importlib
import json


def get_attr_from_module(pclass):
    """The object a dotted path names: 'package.module.name' -> getattr(module, 'name')."""
    module_name, dot, name = pclass.rpartition(".")
    if not dot or not module_name or not name:
        raise ValueError("get_attr_from_module: {!r} is not a dotted path such as 'torch.optim.SGD'".format(pclass))
    module = importlib.import_module(module_name)
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError("get_attr_from_module: module {} has no attribute {!r} (from {!r})"
                             .format(module_name, name, pclass)) from None


def load_experiment_config(experiments_file, experiment_tags):
    """The settings of the experiments named by experiment_tags, each expanded through its bases, merged in order."""
    with open(experiments_file, 'r') as f:
        experiments = json.load(f)
    merged = {}
    for tag in experiment_tags:
        if tag not in experiments:
            raise KeyError("unknown experiment {!r}: {} defines {}".format(tag, experiments_file,
                                                                          ", ".join(sorted(experiments))))
        _inject_items(build_dict(experiments, tag), merged)
    return merged


def _inject_items(tempdict, d):
    """Merges tempdict into d (dicts recursively, other values replaced); returns d."""
    for key, value in tempdict.items():
        if isinstance(value, dict):
            d[key] = _inject_items(value, d.get(key, {}) if isinstance(d.get(key), dict) else {})
        else:
            d[key] = value
    return d


def build_dict(experiments_dict, experiment_name, classhist=None):
    """experiments_dict[experiment_name] over its base (itself over its base, ...), as a new dict.
    "base" may also be a list of names (memcnn, as the C++ trainer's files), merged in order.
    RuntimeError on a circular chain of bases."""
    if experiment_name not in experiments_dict:
        raise KeyError("unknown experiment {!r} (experiments: {})".format(experiment_name,
                                                                          ", ".join(sorted(experiments_dict))))
    experiment = experiments_dict[experiment_name]
    history = [] if classhist is None else classhist
    history.append(experiment_name)
    bases = experiment.get('base')
    if bases is None:
        return copy.deepcopy(experiment)
    merged = {}
    for base in ([bases] if isinstance(bases, str) else bases):
        if base in history:
            raise RuntimeError('Circular dependency found: {} -> {}'.format(' -> '.join(history), base))
        _inject_items(build_dict(experiments_dict, base, list(history)), merged)
    return _inject_items(copy.deepcopy(experiment), merged)


def experiment_config_parser(d, data_dir, workers=None):
    """Builds the experiment that the merged settings d describe: returns (model, optimizer, trainer,
    trainer_params), trainer_params holding train_loader, test_loader and d's trainer_params (its
    "loss" instantiated). `workers`, when given, replaces data_loader_params' workers."""
    for key in ('trainer', 'model', 'model_params', 'optimizer', 'optimizer_params', 'data_loader',
                'data_loader_params'):
        if key not in d:
            raise KeyError("experiment_config_parser: the experiment has no {!r} (it has {}); combine a model "
                           "and a data set, e.g. ['cifar10', 'revnet38']".format(key, ", ".join(sorted(d))))
    trainer = get_attr_from_module(d['trainer'])

    model_params = copy.deepcopy(d['model_params'])
    if 'block' in model_params:
        model_params['block'] = get_attr_from_module(model_params['block'])
    model = get_attr_from_module(d['model'])(**model_params)

    optimizer = get_attr_from_module(d['optimizer'])(model.parameters(), **d['optimizer_params'])

    loader_params = copy.deepcopy(d['data_loader_params'])
    loader_params['dataset'] = get_attr_from_module(loader_params['dataset'])
    loader_params['data_dir'] = data_dir
    if workers is not None:
        loader_params['workers'] = workers
    train_loader, val_loader = get_attr_from_module(d['data_loader'])(**loader_params)

    trainer_params = copy.deepcopy(d.get('trainer_params', {}))
    if 'loss' in trainer_params:
        trainer_params['loss'] = get_attr_from_module(trainer_params['loss'])()
    trainer_params = dict(train_loader=train_loader, test_loader=val_loader, **trainer_params)
    return model, optimizer, trainer, trainer_params
