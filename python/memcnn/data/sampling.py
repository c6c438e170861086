"""NSamplesRandomSampler (MemCNN's): a fixed number of samples drawn as whole random permutations
of the data set, one after another, the last one cut short."""

import torch
from torch.utils.data.sampler import Sampler


class NSamplesRandomSampler(Sampler):
    """Yields `nsamples` indices of data_source: consecutive random permutations of all of its
    indices, so that every index appears once per pass; the last pass is the first
    nsamples % len(data_source) indices of a permutation. nsamples is stored as an int (numpy
    integers and 0-d arrays accepted) and may be set after creation.

    Difference from MemCNN 1.5.2: its last, partial pass draws only from the first
    nsamples % len(data_source) indices of the data set; here it draws from all of them."""

    @property
    def nsamples(self):
        """int: How many indices an iteration yields (set from any integer-like value)."""
        return self._nsamples

    @nsamples.setter
    def nsamples(self, value):
        self._nsamples = int(value)

    def __init__(self, data_source, nsamples):
        self.data_source = data_source
        self.nsamples = nsamples

    def __iter__(self):
        size = len(self.data_source)
        if self.nsamples > 0 and size == 0:
            raise ValueError("NSamplesRandomSampler: cannot draw {} samples from an empty data set"
                             .format(self.nsamples))
        full, rest = divmod(self.nsamples, size) if size else (0, 0)
        for _ in range(full):
            yield from torch.randperm(size).tolist()
        if rest:
            yield from torch.randperm(size)[:rest].tolist()

    def __len__(self):
        return self.nsamples
