"""memcnn.experiment (MemCNN's): factory (experiments files: load, combine, build) and manager
(an experiment's folders, checkpoints and log)."""
