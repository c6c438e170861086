#include "memcnn/models/python_keys.h"

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace memcnn {
namespace models {
namespace {

// The tensors of a layer, by the names PyTorch and LibTorch both give them.
const std::initializer_list<const char*> kWeightOnly = {"weight"};  // convolutions without bias
const std::initializer_list<const char*> kWeightAndBias = {"weight", "bias"};  // linear, LayerNorm, GroupNorm
const std::initializer_list<const char*> kBatchNorm = {"weight", "bias", "running_mean", "running_var",
                                                       "num_batches_tracked"};
// Either normalisation of the iUNet's default block.
const std::initializer_list<const char*>& kGroupOrBatchNorm = kBatchNorm;

std::string list(const std::vector<std::string>& words) {
  std::string text;
  for (const auto& w : words) text += (text.empty() ? "" : ", ") + w;
  return text;
}

// Reads a C++ name one dot-separated part at a time, against what the model has there; anything
// else throws, naming the whole name and what was expected.
class NameReader {
 public:
  NameReader(const std::string& name, std::string model) : name_(name), model_(std::move(model)) {
    std::size_t begin = 0;
    while (true) {
      const auto dot = name.find('.', begin);
      parts_.push_back(name.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin));
      if (dot == std::string::npos) break;
      begin = dot + 1;
    }
  }

  // The next part, which must be one of `choices`.
  std::string one_of(const std::vector<std::string>& choices) {
    const std::string part = next(list(choices));
    for (const auto& c : choices) {
      if (part == c) return part;
    }
    fail("'" + part + "' where " + model_ + " has " + list(choices));
  }
  std::string one_of(std::initializer_list<const char*> choices) {
    return one_of(std::vector<std::string>(choices.begin(), choices.end()));
  }

  void expect(const char* part) { one_of({part}); }

  // The next part: a number below `bound`.
  int64_t index(int64_t bound, const char* what) {
    const std::string part = next(what);
    const bool digits = !part.empty() && part.size() < 10 &&
                        part.find_first_not_of("0123456789") == std::string::npos && (part == "0" || part[0] != '0');
    const int64_t value = digits ? std::stoll(part) : -1;
    if (value < 0 || value >= bound) {
      fail("'" + part + "' where " + model_ + " has " + what + " 0 to " + std::to_string(bound - 1));
    }
    return value;
  }

  // The last part: one of a layer's tensors.
  std::string tensor(std::initializer_list<const char*> tensors) {
    const std::string part = one_of(tensors);
    end();
    return part;
  }

  // Nothing may follow.
  void end() const {
    if (position_ != parts_.size()) fail("more after '" + parts_[position_ - 1] + "'");
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::invalid_argument("python_key_map: the name '" + name_ + "' is not one of " + model_ + "'s: " + what +
                                "; pass the map of the model the names come from (python_key_map(model))");
  }

 private:
  std::string next(const std::string& expected) {
    if (position_ == parts_.size()) fail("it ends where " + model_ + " has " + expected);
    return parts_[position_++];
  }

  std::string name_, model_;
  std::vector<std::string> parts_;
  std::size_t position_ = 0;
};

std::string dot(const std::string& a, const std::string& b) { return a + "." + b; }
std::string dot(const std::string& a, int64_t b) { return a + "." + std::to_string(b); }

// ---- ResNet / RevNet ----

int64_t expansion(BlockKind kind) { return kind == BlockKind::bottleneck ? 4 : 1; }

// Whether a block has a projection shortcut: the first of a stage that changes the resolution or
// the width. ResNetImpl and MemCNN's ResNet._make_layer decide alike, and in a RevNet every other
// block is a coupling (the tests compare with built models of every variant).
bool projects(const ResNetOptions& o, std::size_t stage, int64_t block) {
  if (block != 0) return false;
  const auto& channels = o.channels_per_layer();
  const int64_t in_planes = stage == 0 ? channels[0] : channels[stage] * expansion(o.block());
  return o.strides()[stage + 1] != 1 || in_planes != channels[stage + 1] * expansion(o.block());
}

// A residual branch (BlockSub): [bn1] conv1 bn2 conv2 [bn3 conv3]; Python names its layers alike.
std::string branch_layer(NameReader& r, BlockKind kind, bool noactivation) {
  const bool bottleneck = kind == BlockKind::bottleneck;
  std::string layer;
  if (bottleneck) {
    layer = noactivation ? r.one_of({"conv1", "bn2", "conv2", "bn3", "conv3"})
                         : r.one_of({"bn1", "conv1", "bn2", "conv2", "bn3", "conv3"});
  } else {
    layer = noactivation ? r.one_of({"conv1", "bn2", "conv2"}) : r.one_of({"bn1", "conv1", "bn2", "conv2"});
  }
  return dot(layer, r.tensor(layer.rfind("conv", 0) == 0 ? kWeightOnly : kBatchNorm));
}

std::string resnet_key(const ResNetOptions& o, const std::string& name) {
  NameReader r(name, o.reversible() ? "the RevNet" : "the ResNet");
  const auto top = r.one_of({"stem", "layers", "bn_final", "fc"});
  if (top == "bn_final") return dot(top, r.tensor(kBatchNorm));
  if (top == "fc") return dot(top, r.tensor(kWeightAndBias));
  if (top == "stem") {
    if (o.checkpoint_transitions()) r.expect("module");  // Checkpointed's level: not in Python
    const auto layer = r.one_of({"conv1", "bn1"});
    return dot(layer, r.tensor(layer == "conv1" ? kWeightOnly : kBatchNorm));
  }
  const auto& layers = o.layers();
  const int64_t stage = r.index(static_cast<int64_t>(layers.size()), "stages");
  const int64_t block = r.index(layers[static_cast<std::size_t>(stage)], "blocks");
  const std::string python_block = dot("layer" + std::to_string(stage + 1), block);
  const bool noactivation = stage == 0 && block == 0;
  const bool projection = projects(o, static_cast<std::size_t>(stage), block);
  if (o.reversible() && !projection) {
    r.expect("fn");
    const auto branch = r.one_of({"F", "G"});
    return dot(python_block, "revblock._fn." + branch + "m." + branch_layer(r, o.block(), noactivation));
  }
  if (projection && o.checkpoint_transitions()) r.expect("module");
  const auto part = projection ? r.one_of({"sub", "downsample"}) : r.one_of({"sub"});
  if (part == "downsample") {
    const auto layer = r.one_of({"0", "1"});  // conv, BatchNorm
    return dot(python_block, "downsample." + layer + "." + r.tensor(layer == "0" ? kWeightOnly : kBatchNorm));
  }
  const char* branch = o.block() == BlockKind::bottleneck ? "bottleneck_sub" : "basicblock_sub";
  return dot(python_block, dot(branch, branch_layer(r, o.block(), noactivation)));
}

// ---- ViT / RevViT (Python names them as C++ does) ----

std::string attention_layer(NameReader& r) {
  const auto layer = r.one_of({"norm", "qkv", "projection"});
  return dot(layer, r.tensor(kWeightAndBias));
}

std::string mlp_layer(NameReader& r) {
  const auto layer = r.one_of({"norm", "fc1", "fc2"});
  return dot(layer, r.tensor(kWeightAndBias));
}

// embedding, norm and head: the same in both.
std::string transformer_ends(NameReader& r, const ViTOptions& o, const std::string& top) {
  if (top != "embedding") return dot(top, r.tensor(kWeightAndBias));
  const auto part = o.pooling() == TokenPooling::class_token
                        ? r.one_of({"projection", "class_token", "position_embedding"})
                        : r.one_of({"projection", "position_embedding"});
  if (part != "projection") {
    r.end();
    return dot(top, part);
  }
  return dot(top, dot(part, r.tensor(kWeightAndBias)));
}

std::string vit_key(const ViTOptions& o, const std::string& name) {
  NameReader r(name, "the ViT");
  const auto top = r.one_of({"embedding", "blocks", "norm", "head"});
  if (top != "blocks") return transformer_ends(r, o, top);
  const int64_t block = r.index(o.depth(), "blocks");
  const auto branch = r.one_of({"attention", "mlp"});
  return dot(dot(top, block), dot(branch, branch == "attention" ? attention_layer(r) : mlp_layer(r)));
}

std::string revvit_key(const RevViTOptions& o, const std::string& name) {
  NameReader r(name, o.single_node() ? "the single-node RevViT" : "the RevViT");
  const auto& shape = o.transformer();
  const auto top = r.one_of({"embedding", "blocks", "norm", "head"});
  if (top != "blocks") return transformer_ends(r, shape, top);
  int64_t block = 0;
  if (o.single_node()) {
    r.expect("0");  // one wrapper around an InvertibleSequential of the couplings
    r.expect("fn");
    block = r.index(shape.depth(), "blocks");
  } else {
    block = r.index(shape.depth(), "blocks");
    r.expect("fn");
  }
  const auto branch = r.one_of({"F", "G"});  // attention, MLP
  return dot(dot(top, block), "fn." + dot(branch, branch == "F" ? attention_layer(r) : mlp_layer(r)));
}

// ---- iUNet ----

// The coupling of the default block: F and G, conv - norm each (Python: Fm and Gm).
std::string iunet_coupling(NameReader& r) {
  const auto branch = r.one_of({"F", "G"});
  const auto layer = r.one_of({"conv", "norm"});
  return branch + "m." + dot(layer, r.tensor(layer == "conv" ? kWeightOnly : kGroupOrBatchNorm));
}

// A stage: C++ wraps each block with its channel mixing (encoder_1.K.fn.{0: mixing, 1: block});
// Python wraps the whole stage (encoder_1._fn.{mixings and blocks numbered on}).
std::string iunet_stage(NameReader& r, const IUNetOptions& o, const std::string& stage, int64_t blocks) {
  const int64_t block = r.index(blocks, "blocks");
  const int64_t every = o.channel_mixing_every();
  auto mixes = [every](int64_t b) { return every > 0 && b % every == 0; };
  int64_t python_index = 0;  // of the block's first member in Python's chain
  for (int64_t b = 0; b < block; ++b) python_index += mixes(b) ? 2 : 1;
  r.expect("fn");
  const int64_t member = r.index(mixes(block) ? 2 : 1, "members");
  const std::string python_member = dot(stage + "._fn", python_index + member);
  if (mixes(block) && member == 0) return dot(python_member, r.tensor({"free"}));
  return dot(python_member, iunet_coupling(r));
}

// The parts the iUNet has: "encoder_L" (blocks before level L's split), "decoder_L" (after its
// concatenation), "downsampling_L" and "upsampling_L" (to and from level L + 1).
std::vector<std::string> iunet_parts(const IUNetOptions& o) {
  std::vector<std::string> parts;
  const auto& layers = o.layers();
  const auto levels = static_cast<int64_t>(layers.size());
  for (int64_t level = 0; level < levels; ++level) {
    const auto suffix = "_" + std::to_string(level);
    if (layers[static_cast<std::size_t>(level)] > 0) parts.push_back("encoder" + suffix);
    if (level + 1 == levels) break;
    if (layers[static_cast<std::size_t>(level)] > 0) parts.push_back("decoder" + suffix);
    parts.push_back("downsampling" + suffix);
    parts.push_back("upsampling" + suffix);
  }
  return parts;
}

std::string iunet_key(const IUNetOptions& o, NameReader& r) {
  const auto parts = iunet_parts(o);
  const auto part = r.one_of(parts);
  if (part.rfind("encoder", 0) == 0 || part.rfind("decoder", 0) == 0) {
    const auto level = static_cast<std::size_t>(std::stoll(part.substr(part.find('_') + 1)));
    return iunet_stage(r, o, part, o.layers()[level]);
  }
  r.expect("fn");
  const auto tensor = o.learnable_resampling() ? r.one_of({"free", "base_pattern"}) : r.one_of({"base_pattern"});
  r.end();
  // The fixed pattern is rebuilt from the options in Python and not saved there.
  return tensor == "base_pattern" ? kNotInPythonStateDict : dot(part + "._fn", tensor);
}

std::string segmentation_key(const IUNetSegmentationOptions& o, const std::string& name) {
  NameReader r(name, "the IUNetSegmentation");
  const auto top = r.one_of({"stem", "iunet", "head"});
  if (top == "iunet") {
    const auto key = iunet_key(o.iunet(), r);
    return key.empty() ? key : dot(top, key);
  }
  r.expect("0");
  return dot(top, "0." + r.tensor(kWeightAndBias));
}

// The options memcnn-train's iunet3d recipe gives (train/experiments.json, build_segmentation_model):
// checked against the trainer's model by test_python_keys.
IUNetSegmentationOptions iunet3d_recipe() {
  IUNetOptions iunet({8, 32, 128}, {0, 2, 2}, 3);
  iunet.block(iunet_coupling_blocks(IUNetNorm::batch)).channel_mixing_every(1).learnable_resampling(true);
  return IUNetSegmentationOptions(1, 1, iunet);
}

template <typename Options>
KeyMap map_of(Options options, std::string (*key)(const Options&, const std::string&)) {
  return [options = std::move(options), key](const std::string& name) { return key(options, name); };
}

}  // namespace

std::vector<std::string> python_key_model_names() {
  auto names = model_names();
  for (const auto& n : transformer_names()) names.push_back(n);
  names.emplace_back("iunet3d");
  return names;
}

KeyMap python_key_map(const ResNetOptions& options) {
  const auto stages = options.layers().size();
  if (options.channels_per_layer().size() != stages + 1 || options.strides().size() != stages + 1) {
    throw std::invalid_argument("python_key_map: a ResNet's channels_per_layer and strides need one entry for the "
                                "stem and one per stage (" + std::to_string(stages + 1) + "), got " +
                                std::to_string(options.channels_per_layer().size()) + " and " +
                                std::to_string(options.strides().size()));
  }
  return map_of(options, &resnet_key);
}
KeyMap python_key_map(const ViTOptions& options) { return map_of(options, &vit_key); }
KeyMap python_key_map(const RevViTOptions& options) { return map_of(options, &revvit_key); }

KeyMap python_key_map(const IUNetOptions& options) {
  return [options](const std::string& name) {
    NameReader r(name, "the IUNet");
    return iunet_key(options, r);
  };
}

KeyMap python_key_map(const IUNetSegmentationOptions& options) { return map_of(options, &segmentation_key); }

KeyMap python_key_map(const std::string& model_name) {
  const auto known = python_key_model_names();
  if (model_name == "iunet3d") return python_key_map(iunet3d_recipe());
  if (is_transformer(model_name)) {
    // Names depend on neither the class count, the channels nor the image size.
    const auto shape = transformer_options(model_name, 10, 3, 32);
    if (is_reversible_transformer(model_name)) return python_key_map(RevViTOptions(shape));
    return python_key_map(shape);
  }
  for (const auto& n : model_names()) {
    if (n == model_name) return python_key_map(model_options(model_name));
  }
  std::string names;
  for (const auto& n : known) names += (names.empty() ? "" : ", ") + n;
  throw std::invalid_argument("python_key_map: unknown model '" + model_name + "'; the models with Python names: " +
                              names);
}

KeyMap python_key_map(const torch::nn::Module& model) {
  if (const auto* m = dynamic_cast<const ResNetImpl*>(&model)) return python_key_map(m->options);
  if (const auto* m = dynamic_cast<const ViTImpl*>(&model)) return python_key_map(m->options);
  if (const auto* m = dynamic_cast<const RevViTImpl*>(&model)) return python_key_map(m->options);
  if (const auto* m = dynamic_cast<const IUNetImpl*>(&model)) return python_key_map(m->options);
  if (const auto* m = dynamic_cast<const IUNetSegmentationImpl*>(&model)) return python_key_map(m->options);
  throw std::invalid_argument("python_key_map: no Python names are known for a " + model.name() +
                              "; memcnn's ResNet, ViT, RevViT, IUNet and IUNetSegmentation have them");
}

}  // namespace models
}  // namespace memcnn
