"""CrossEntropyLossTF (MemCNN's): cross entropy scaled as TensorFlow's RevNet code computes it,
the mean over batch and classes of -onehot * log softmax, times the number of classes (equal to
the usual mean cross entropy), with optional per-element weights W. Computed with log_softmax,
which stays finite where MemCNN's log(softmax) overflows."""

import torch
import torch.nn as nn


def _assert_no_grad(variable):
    """Targets are data, not something to differentiate: raises AssertionError when they require grad."""
    if variable.requires_grad:
        raise AssertionError("nn criterions don't compute the gradient w.r.t. targets - please mark these "
                             "variables as not requiring gradients")


class CrossEntropyLossTF(nn.Module):
    """Cross entropy as TensorFlow's RevNet code computes it (see the module's description)."""

    def __init__(self):
        super(CrossEntropyLossTF, self).__init__()

    def forward(self, Ypred, Y, W=None):
        """Returns the loss, a scalar tensor.

        Args:
            Ypred (torch.Tensor): scores [N, C].
            Y (torch.Tensor): class indices [N] (int64).
            W (torch.Tensor, optional): weights broadcasting to [N, C].

        Raises:
            AssertionError: when Y requires grad.
        """
        _assert_no_grad(Y)
        classes = Ypred.shape[1]
        onehot = torch.zeros(Ypred.shape[0], classes, dtype=torch.float32, device=Ypred.device)
        onehot.scatter_(1, Y.detach().view(-1, 1), 1)
        if W is not None:
            onehot = onehot * W
        # log_softmax where MemCNN takes the log of a softmax: equal, except that it cannot overflow
        # to -inf (and a NaN loss) when a score is far below the others
        return torch.mean(-onehot * torch.log_softmax(Ypred, dim=1)) * classes
