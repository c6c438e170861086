"""Running averages and top-k accuracy (MemCNN's memcnn.utils.stats)."""


class AverageMeter(object):
    """The last value (val) and the count-weighted mean (avg) of what update() was given."""

    def __init__(self):
        self.reset()

    def reset(self):
        """Forgets every value: val, avg, sum and count become 0."""
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        """Records val as the mean of n items."""
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


def accuracy(output, target, topk=(1,)):
    """For each k in topk, the percentage of rows of `output` (scores [N, C]) whose k highest scores
    include the class in `target` ([N]), as a one-element float tensor."""
    largest = max(topk)
    batch_size = target.size(0)
    _, predicted = output.topk(largest, 1, True, True)
    hits = predicted.t().eq(target.view(1, -1).expand(largest, batch_size))
    return [hits[:k].reshape(-1).float().sum(dim=0, keepdim=True).mul_(100.0 / batch_size) for k in topk]
