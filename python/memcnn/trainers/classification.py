"""The classification trainer of `python -m memcnn.train` (MemCNN's memcnn.trainers.classification).

Python on purpose: the loop only orchestrates; each step's work (forward, the memory-saving
backward, the optimizer) already runs in LibTorch and memcnn's C++ core, so a C++ loop would not
make a step faster, while this one takes any torch.nn.Module, loss, optimizer and DataLoader, as
MemCNN's does, and writes MemCNN's results (ExperimentManager's checkpoints, scalars.json).

Differences from MemCNN 1.5.2, none in the results' format:
- activation memory (bytes held after forward above those held before it, from the allocator:
  memcnn's counting CPU allocator or CUDA's) is measured on the CPU too, logged in MiB, and
  recorded as "act_mem_allocation" in bytes, as MemCNN records it on CUDA;
- the training sampler is asked for the remaining iterations only, and left as it was given;
- Ctrl-C saves the last completed iteration's checkpoint (a rerun continues from it), then stops."""

import logging
import time

import numpy as np
import torch

from memcnn.utils.log import SummaryWriter
from memcnn.utils.stats import AverageMeter, accuracy

logger = logging.getLogger('trainer')

MIB = float(2 ** 20)
LR_DECAY_ITERATIONS = (40000, 60000)  # MemCNN's CIFAR schedule: learning rate x0.1 at each


def _allocated_bytes(device):
    """Bytes held by tensors on `device` now, from its allocator."""
    if device.type == 'cuda':
        return torch.cuda.memory_allocated(device)
    import memcnn
    if not memcnn.cpu_memory_tracking_enabled():
        return None
    return memcnn.memory_stats('cpu')['current_bytes']


def validate(model, ceriterion, val_loader, device):
    """Loss and top-1 accuracy (percent) of `model` in eval mode over val_loader: (accuracy, loss),
    averages over the samples."""
    model.eval()
    batch_time = AverageMeter()
    losses = AverageMeter()
    top1 = AverageMeter()
    end = time.time()
    with torch.no_grad():
        for x, label in val_loader:
            x, label = x.to(device), label.to(device)
            score = model(x)
            loss = ceriterion(score, label)
            losses.update(loss.item(), x.size(0))
            top1.update(accuracy(score, label)[0].item(), x.size(0))
            batch_time.update(time.time() - end)
            end = time.time()
    logger.info('Test: [{0}/{0}]\tTime {bt.val:.3f} ({bt.avg:.3f})\tLoss {loss.val:.4f} ({loss.avg:.4f})\t'
                'Prec@1 {top1.val:.3f} ({top1.avg:.3f})\t'.format(len(val_loader), bt=batch_time, loss=losses,
                                                                  top1=top1))
    return top1.avg, losses.avg


def get_model_parameters_count(model):
    """Returns the number of parameter elements of the model (trainable or not)."""
    return int(np.sum([np.prod([int(e) for e in p.shape]) for p in model.parameters()]))


def train(manager,
          train_loader,
          test_loader,
          start_iter,
          disp_iter=100,
          save_iter=10000,
          valid_iter=1000,
          use_cuda=False,
          loss=None):
    """Trains manager.model with manager.optimizer from iteration start_iter + 1 up to the number of
    iterations train_loader's sampler holds (sampler.nsamples // batch_size, MemCNN's
    NSamplesRandomSampler), minimising `loss` (score, label). Every disp_iter iterations it logs
    and records train_loss, train_acc (and act_mem_allocation); every valid_iter it validates on
    test_loader (test_loss, test_acc); every save_iter it saves a checkpoint through the manager.
    The learning rate is multiplied by 0.1 at iterations 40000 and 60000. A NaN loss raises
    ValueError."""
    if loss is None:
        raise ValueError("train: no loss given (the experiment's trainer_params need a 'loss', "
                         "e.g. memcnn.utils.loss.CrossEntropyLossTF)")
    device = torch.device('cuda' if use_cuda else 'cpu')
    model, optimizer = manager.model, manager.optimizer
    sampler = getattr(train_loader, 'sampler', None)
    if not hasattr(sampler, 'nsamples'):
        raise ValueError("train: train_loader's sampler ({}) has no nsamples; use "
                         "memcnn.data.sampling.NSamplesRandomSampler, which fixes the number of samples "
                         "to train on".format(type(sampler).__name__))
    batch_size = train_loader.batch_size
    max_iterations = sampler.nsamples // batch_size

    logger.info('Model parameters: {}'.format(get_model_parameters_count(model)))
    if use_cuda:
        logger.info('Model memory allocation: {}'.format(torch.cuda.memory_allocated(device)))

    writer = SummaryWriter(manager.log_dir)
    data_time = AverageMeter()
    batch_time = AverageMeter()
    losses = AverageMeter()
    top1 = AverageMeter()
    activations = AverageMeter()
    criterion = loss

    if start_iter >= max_iterations:
        logger.info('maximum number of iterations reached: {}/{}'.format(start_iter, max_iterations))
        writer.close()
        return

    given_nsamples = sampler.nsamples
    sampler.nsamples = (max_iterations - start_iter) * batch_size
    completed = start_iter
    end = time.time()
    try:
        for index, (x, label) in enumerate(train_loader):
            iteration = start_iter + index + 1
            if iteration > max_iterations:
                break
            if iteration in LR_DECAY_ITERATIONS:
                for group in optimizer.param_groups:
                    group['lr'] *= 0.1

            model.train()
            data_time.update(time.time() - end)
            end = time.time()
            x, label = x.to(device), label.to(device)

            before = _allocated_bytes(device)
            score = model(x)
            loss_value = criterion(score, label)
            if before is not None:
                activations.update(_allocated_bytes(device) - before)
            if torch.isnan(loss_value):
                raise ValueError("Loss became NaN during iteration {}".format(iteration))

            optimizer.zero_grad()
            loss_value.backward()
            optimizer.step()
            completed = iteration

            batch_time.update(time.time() - end)
            prec1 = accuracy(score.detach(), label)[0].item()
            loss_item = loss_value.item()
            losses.update(loss_item, x.size(0))
            top1.update(prec1, x.size(0))

            if iteration % disp_iter == 0:
                act = '' if activations.count == 0 else 'ActMem {:.1f} MiB ({:.1f} MiB)'.format(
                    activations.val / MIB, activations.avg / MIB)
                logger.info('iteration: [{0}/{1}]\tTime {bt.val:.3f} ({bt.avg:.3f})\t'
                            'Data {dt.val:.3f} ({dt.avg:.3f})\tLoss {loss.val:.4f} ({loss.avg:.4f})\t'
                            'Prec@1 {top1.val:.3f} ({top1.avg:.3f})\t{act}'
                            .format(iteration, max_iterations, bt=batch_time, dt=data_time, loss=losses,
                                    top1=top1, act=act))
                writer.add_scalar('train_loss', loss_item, iteration)
                writer.add_scalar('train_acc', prec1, iteration)
                if activations.count:
                    writer.add_scalar('act_mem_allocation', activations.avg, iteration)
                for meter in (losses, top1, data_time, batch_time, activations):
                    meter.reset()

            if iteration % valid_iter == 0:
                test_top1, test_loss = validate(model, criterion, test_loader, device=device)
                writer.add_scalar('test_loss', test_loss, iteration)
                writer.add_scalar('test_acc', test_top1, iteration)

            if iteration % save_iter == 0:
                manager.save_train_state(iteration)
                writer.flush()
            end = time.time()
        if completed >= max_iterations:
            logger.info('maximum number of iterations reached: {}/{}'.format(completed, max_iterations))
    except KeyboardInterrupt:
        if completed > start_iter and completed % save_iter != 0:
            logger.info('Interrupted: saving iteration {} (a rerun continues from it)'.format(completed))
            manager.save_train_state(completed)
        raise
    finally:
        sampler.nsamples = given_nsamples
        writer.close()
