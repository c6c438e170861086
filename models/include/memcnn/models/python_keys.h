#pragma once
/// @file
/// The names memcnn's models have in their Python twins' state_dict(), for memcnn::load_state_dict
/// and module_state_dict (memcnn/state_dict.h): weights trained in Python load into the C++ model
/// and back. docs/weights-keys.md has the table.
///
///   ResNets and RevNets: MemCNN 1.5.2's memcnn.models.resnet.ResNet as its experiments.json builds
///     it (memcnn's Python package has the same names): stem.conv1.weight -> conv1.weight,
///     layers.0.1.fn.F.conv1.weight -> layer1.1.revblock._fn.Fm.conv1.weight, ...
///   ViT and RevViT: memcnn.models.vit (named as in C++: the identity), a single-node RevViT
///     mapped to the names of the one-wrapper-per-block RevViT that Python builds by default.
///   iUNet: memcnn.iunet.IUNet with its default coupling blocks; the C++ model wraps each block on
///     its own where Python wraps a whole stage: encoder_1.1.fn.0.free -> encoder_1._fn.2.free.
///
/// A map is a bijection from the C++ model's parameter and buffer names (as named_parameters() and
/// named_buffers() spell them) to Python's: distinct names give distinct names, and a name the
/// model does not have throws std::invalid_argument naming it. The one exception: a tensor that
/// Python's state_dict does not hold, because it is rebuilt from the options there (the fixed
/// base_pattern buffer of the iUNet's resampling layers, non-persistent in Python), maps to the
/// empty string, kNotInPythonStateDict.

#include <memcnn/state_dict.h>
#include <memcnn/models/iunet.h>
#include <memcnn/models/resnet.h>
#include <memcnn/models/vit.h>

#include <torch/nn/module.h>

#include <string>
#include <vector>

namespace memcnn {
namespace models {

/// What a key map gives for a tensor that Python's state_dict does not hold.
inline const std::string kNotInPythonStateDict;

/// The models python_key_map(name) knows: memcnn-train's (model_names(), transformer_names(), iunet3d).
std::vector<std::string> python_key_model_names();

/// The map for memcnn-train's model `model_name` as its recipe builds it (any num_classes,
/// in_channels and image size); std::invalid_argument listing the known names for another.
/// A model built with other options needs the map of its options or of the model itself.
KeyMap python_key_map(const std::string& model_name);

/// A ResNet or RevNet of these options, with whatever checkpoint_transitions, exact, anchor_every
/// and wrapper options: they change no Python name.
KeyMap python_key_map(const ResNetOptions& options);
/// A ViT of these options: the names are the C++ ones (memcnn.models.vit names alike).
KeyMap python_key_map(const ViTOptions& options);
/// single_node or not, the names of Python's RevViT with one wrapper per block.
KeyMap python_key_map(const RevViTOptions& options);
/// An IUNet of the default coupling blocks (iunet_coupling_blocks, either normalisation); the
/// names of blocks from another factory are not known and throw.
KeyMap python_key_map(const IUNetOptions& options);
/// The segmentation network (stem, iUNet, head) whose twin is a torch.nn.Module holding
/// stem = Sequential(ConvNd), iunet = memcnn.IUNet and head = Sequential(ConvNd).
KeyMap python_key_map(const IUNetSegmentationOptions& options);

/// The map for this model (a ResNet, ViT, RevViT, IUNet or IUNetSegmentation), from its options;
/// std::invalid_argument for another kind of module.
KeyMap python_key_map(const torch::nn::Module& model);

}  // namespace models
}  // namespace memcnn
