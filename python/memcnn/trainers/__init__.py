"""memcnn.trainers (MemCNN's): classification.train and classification.validate."""
