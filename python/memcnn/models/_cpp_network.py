"""The base of memcnn's Python modules whose network is built and run in C++ (memcnn.models.vit,
memcnn.models.revgan).

The C++ network computes; the Python module owns the parameters: nn.Parameters under the C++
names (so state_dict keys match memcnn-train's checkpoints), which the C++ network is pointed at
before every call. So .to(), .double(), load_state_dict, torch.optim optimizers, deepcopy and
pickling work as for any torch.nn.Module, and gradients arrive on the Python parameters.
"""

import torch.nn as nn

__all__ = ['CppNetwork']


class _Part(nn.Module):
    """Holds the parameters of one part of the C++ network, under its C++ name."""

    def forward(self, *args):
        """Not callable: a part holds parameters only.

        Raises:
            RuntimeError: always; call the whole network.
        """
        raise RuntimeError("a part of a memcnn C++ network's parameters; call the whole network")


class CppNetwork(nn.Module):
    """A torch.nn.Module around a network built in C++ from keyword options.

    Subclasses define ``_build(options)`` (the C++ network), ``_parameters_of(network)`` (its
    (name, tensor) pairs) and ``_bind(network, tensors, training)`` (points it at the Python
    tensors); the options are kept, so a copy or an unpickled module builds its network again.

    Args:
        **options: the subclass's options, passed to ``_build``.
    """

    def __init__(self, **options):
        super().__init__()
        self._options = options
        network = self._build(options)
        for name, tensor in self._parameters_of(network):
            *path, leaf = name.split('.')
            module = self
            for part in path:
                if part not in module._modules:
                    module.add_module(part, _Part())
                module = module._modules[part]
            module.register_parameter(leaf, nn.Parameter(tensor.detach().clone()))
        self.__dict__['_cpp_network'] = network

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop('_cpp_network', None)
        return state

    def _network(self):
        """The C++ network, pointed at this module's parameters and training mode."""
        network = self.__dict__.get('_cpp_network')
        if network is None:  # a copy or an unpickled module: built again, then given the parameters
            network = self._build(self._options)
            self.__dict__['_cpp_network'] = network
        self._bind(network, dict(self.named_parameters()), self.training)
        return network

    def plannable_blocks(self):
        """The memory-saving blocks inside the C++ network, for memcnn.plan_memory.

        Returns:
            list of memcnn._C.PlannableBlock, named as in the C++ network (memcnn.plannable_blocks
            prefixes them with this module's name in the whole model).
        """
        return list(self._plannable_blocks(self._network()))

    @staticmethod
    def _plannable_blocks(network):
        return []

    def extra_repr(self):
        """The network's options, for print(model)."""
        return ', '.join('{}={!r}'.format(k, v) for k, v in self._options.items())
