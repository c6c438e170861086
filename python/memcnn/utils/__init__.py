"""memcnn.utils (MemCNN's): loss (CrossEntropyLossTF), stats (AverageMeter, accuracy), log (setup,
SummaryWriter)."""
