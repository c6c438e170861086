#pragma once
/// @file
/// What the trainer needs of a model: images [N, C, H, W] in, class logits [N, classes] out. The
/// ResNets/RevNets (resnet.h) and the vision transformers (vit.h) implement it, so one training
/// loop, checkpoint format and command line serve them all.

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <type_traits>

namespace memcnn {
/// Models built on memcnn (the memcnn::models component, library memcnn_models): ResNets and
/// RevNets, vision transformers (ViT, RevViT), iUNets for segmentation, and the names their
/// weights carry in memcnn's Python package.
namespace models {

/// The interface of the image classifiers (ResNetImpl, ViTImpl, RevViTImpl) the trainer drives.
class ClassifierImpl : public virtual torch::nn::Module {
 public:
  /// Logits [N, classes] for images [N, C, H, W].
  virtual torch::Tensor forward(torch::Tensor images) = 0;
  /// Whether weight decay (AdamW's) applies to the parameter of this name (as named_parameters()
  /// names it): by default to weight matrices and kernels, not to biases and normalisation scales
  /// (fewer than 2 dimensions). Transformers also exempt their position embedding and class token.
  virtual bool decays(const std::string& name, const torch::Tensor& parameter) const { return parameter.dim() >= 2; }
};

/// A module holder of any classifier: Classifier(resnet.ptr()), Classifier(vit.ptr()).
class Classifier : public torch::nn::ModuleHolder<ClassifierImpl> {
 public:
  /// An empty holder (as `Classifier classifier{nullptr};`).
  Classifier(std::nullptr_t) : ModuleHolder(nullptr) {}  // NOLINT(google-explicit-constructor)
  /// Holds `module`, a pointer to any classifier implementation.
  template <typename Impl, typename = std::enable_if_t<std::is_base_of_v<ClassifierImpl, Impl>>>
  Classifier(std::shared_ptr<Impl> module)  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::shared_ptr<ClassifierImpl>(std::move(module))) {}
  /// Holds the module of another holder (`Classifier(resnet)` for a ResNet `resnet`).
  template <typename Impl, typename = std::enable_if_t<std::is_base_of_v<ClassifierImpl, Impl>>>
  Classifier(const torch::nn::ModuleHolder<Impl>& holder)  // NOLINT(google-explicit-constructor)
      : Classifier(holder.ptr()) {}
};

}  // namespace models
}  // namespace memcnn
