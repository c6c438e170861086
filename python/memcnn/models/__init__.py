"""MemCNN's memcnn.models: the couplings (additive, affine), the memory-saving wrapper (revop), the
ResNets and RevNets of its experiments (resnet) and the vision transformers (vit)."""
