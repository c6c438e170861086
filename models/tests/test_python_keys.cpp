// python_key_map: the C++ models that memcnn-train builds, their names mapped, hold the tensors of
// their Python twins' state_dict, name for name and shape for shape. The twins' lists are
// committed (data/python_keys, written by python/tools/dump_state_dict_keys.py: the ResNets' from
// MemCNN 1.5.2, the others from memcnn's Python package, which python/tests/test_python_keys.py
// checks against them). The models are built by the trainer (memcnn::train), so every variant it
// can build is covered, and each map is checked to be a bijection that refuses foreign names.

#include <memcnn/models/python_keys.h>

#include <memcnn/train/config.h>
#include <memcnn/train/segmentation.h>
#include <memcnn/train/trainer.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace {

using memcnn::KeyMap;
using memcnn::models::python_key_map;
using Json = memcnn::train::Json;
using Shapes = std::map<std::string, std::vector<int64_t>>;

// The committed list of the Python twin of `model` on `dataset`: name -> shape.
Shapes python_fixture(const std::string& model, const std::string& dataset) {
  const std::string path = std::string(MEMCNN_PYTHON_KEYS_DIR) + "/" + model + "-" + dataset + ".txt";
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read " + path);
  Shapes shapes;
  std::string line;
  while (std::getline(file, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name, shape;
    fields >> name >> shape;
    if (shape.size() < 2 || shape.front() != '[' || shape.back() != ']') throw std::runtime_error(path + ": " + line);
    std::vector<int64_t> sizes;
    std::istringstream dims(shape.substr(1, shape.size() - 2));
    for (std::string d; std::getline(dims, d, ',');) sizes.push_back(std::stoll(d));
    if (!shapes.emplace(name, sizes).second) throw std::runtime_error(path + ": " + name + " twice");
  }
  return shapes;
}

struct Mapped {
  Shapes shapes;                      // Python name -> shape
  std::vector<std::string> not_held;  // C++ names Python's state_dict does not hold
};

// Every parameter and buffer of the module under its Python name; fails the test when two map
// to one name.
Mapped map_module(const torch::nn::Module& module, const KeyMap& map) {
  Mapped mapped;
  auto add = [&](const std::string& name, const torch::Tensor& tensor) {
    const auto key = map(name);
    if (key == memcnn::models::kNotInPythonStateDict) {
      mapped.not_held.push_back(name);
      return;
    }
    const auto inserted = mapped.shapes.emplace(key, tensor.sizes().vec());
    EXPECT_TRUE(inserted.second) << name << " maps to " << key << ", as another name does";
  };
  for (const auto& p : module.named_parameters()) add(p.key(), p.value());
  for (const auto& b : module.named_buffers()) add(b.key(), b.value());
  return mapped;
}

std::string shape_text(const std::vector<int64_t>& sizes) { return c10::str(c10::IntArrayRef(sizes)); }

// The differences, one a line, for a readable failure.
std::string differences(const Shapes& cpp, const Shapes& python) {
  std::string text;
  for (const auto& [name, shape] : cpp) {
    const auto found = python.find(name);
    if (found == python.end()) text += "  only in C++: " + name + "\n";
    else if (found->second != shape)
      text += "  " + name + ": C++ " + shape_text(shape) + ", Python " + shape_text(found->second) + "\n";
  }
  for (const auto& [name, shape] : python) {
    if (cpp.count(name) == 0) text += "  only in Python: " + name + "\n";
  }
  return text;
}

int64_t image_size_of(const std::string& dataset) { return dataset == "fashion-mnist" ? 28 : 32; }

// The recipe of the model and dataset, with `model_options` over its own.
Json recipe(const std::string& model, const std::string& dataset, const Json& model_options) {
  auto experiment = memcnn::train::experiment_for(memcnn::train::default_experiments(), model, dataset);
  for (auto it = model_options.begin(); it != model_options.end(); ++it) {
    experiment["model_options"][it.key()] = it.value();
  }
  return experiment;
}

// memcnn-train's classifier for the model and dataset.
memcnn::models::Classifier trainer_classifier(const std::string& model, const std::string& dataset,
                                              const Json& model_options = Json::object()) {
  const auto experiment = recipe(model, dataset, model_options);
  auto config = memcnn::train::TrainConfig::from_json(experiment);
  config.image_size = image_size_of(dataset);  // memcnn-train takes it from the data
  return memcnn::train::build_classifier(config);
}

memcnn::models::IUNetSegmentation trainer_iunet3d(const Json& model_options = Json::object()) {
  const auto experiment = recipe("iunet3d", "brain-extraction", model_options);
  return memcnn::train::build_segmentation_model(memcnn::train::SegmentationConfig::from_json(experiment));
}

// The model's names through `map` are the fixture's, with its shapes; `not_held` the C++ names
// without a Python entry.
void expect_twin(const torch::nn::Module& module, const KeyMap& map, const std::string& model,
                 const std::string& dataset, const std::vector<std::string>& not_held = {}) {
  const auto mapped = map_module(module, map);
  const auto python = python_fixture(model, dataset);
  EXPECT_EQ(mapped.shapes.size(), python.size()) << model << " " << dataset;
  EXPECT_TRUE(mapped.shapes == python) << model << " on " << dataset << ":\n" << differences(mapped.shapes, python);
  EXPECT_EQ(std::set<std::string>(mapped.not_held.begin(), mapped.not_held.end()),
            std::set<std::string>(not_held.begin(), not_held.end()))
      << model;
}

struct Case {
  std::string model, dataset;
};

const std::vector<Case> kClassifierCases = {
    {"resnet32", "cifar10"},     {"resnet32", "cifar100"},      {"resnet32", "fashion-mnist"},
    {"resnet110", "cifar10"},    {"resnet110", "cifar100"},     {"resnet164", "cifar10"},
    {"resnet164", "cifar100"},   {"revnet38", "cifar10"},       {"revnet38", "cifar100"},
    {"revnet38", "fashion-mnist"}, {"revnet110", "cifar10"},    {"revnet110", "cifar100"},
    {"revnet164", "cifar10"},    {"revnet164", "cifar100"},     {"vit_tiny", "cifar10"},
    {"vit_tiny", "cifar100"},    {"vit_tiny", "fashion-mnist"}, {"revvit_tiny", "cifar10"},
    {"revvit_tiny", "cifar100"}, {"revvit_tiny", "fashion-mnist"}, {"vit_small", "cifar10"},
    {"vit_small", "cifar100"},   {"revvit_small", "cifar10"},   {"revvit_small", "cifar100"}};

const std::vector<std::string> kIUNet3dNotHeld = {"iunet.downsampling_0.fn.base_pattern",
                                                 "iunet.upsampling_0.fn.base_pattern",
                                                 "iunet.downsampling_1.fn.base_pattern",
                                                 "iunet.upsampling_1.fn.base_pattern"};

TEST(PythonKeys, TrainerModelsHoldTheirPythonTwinsTensors) {
  for (const auto& c : kClassifierCases) {
    SCOPED_TRACE(c.model + " " + c.dataset);
    const auto model = trainer_classifier(c.model, c.dataset);
    expect_twin(*model, python_key_map(c.model), c.model, c.dataset);
    expect_twin(*model, python_key_map(*model), c.model, c.dataset);
  }
}

TEST(PythonKeys, IUNet3dHoldsItsPythonTwinsTensors) {
  const auto model = trainer_iunet3d();
  expect_twin(*model, python_key_map("iunet3d"), "iunet3d", "brain-extraction", kIUNet3dNotHeld);
  expect_twin(*model, python_key_map(*model), "iunet3d", "brain-extraction", kIUNet3dNotHeld);
  // The IUNet on its own: the same names below `iunet.`.
  const auto iunet = python_key_map(*model->iunet);
  EXPECT_EQ(iunet("encoder_1.1.fn.1.G.norm.running_var"), "encoder_1._fn.3.Gm.norm.running_var");
  EXPECT_EQ(iunet("downsampling_1.fn.base_pattern"), memcnn::models::kNotInPythonStateDict);
}

// Python numbers a stage's mixings and couplings on (encoder_0._fn.N); C++ numbers the blocks
// (encoder_0.K.fn.{mixing, coupling}). Python's IUNet([4, 8], [3, 2], 2, channel_mixing_every=2)
// has encoder_0._fn: 0 mixing, 1 coupling, 2 coupling, 3 mixing, 4 coupling; with 0, three couplings.
TEST(PythonKeys, IUNetStagesAreNumberedAsPythonsChains) {
  for (const int64_t every : {2, 0}) {
    memcnn::models::IUNet model(memcnn::models::IUNetOptions({4, 8}, {3, 2}, 2).channel_mixing_every(every));
    const auto map = python_key_map(*model);
    const auto mapped = map_module(*model, map);  // injective (checked there)
    EXPECT_EQ(mapped.not_held.size(), 2u);       // the two resamplings' base_pattern
    if (every == 2) {
      EXPECT_EQ(map("encoder_0.0.fn.0.free"), "encoder_0._fn.0.free");
      EXPECT_EQ(map("encoder_0.0.fn.1.F.conv.weight"), "encoder_0._fn.1.Fm.conv.weight");
      EXPECT_EQ(map("encoder_0.1.fn.0.G.norm.weight"), "encoder_0._fn.2.Gm.norm.weight");  // GroupNorm
      EXPECT_EQ(map("encoder_0.2.fn.0.free"), "encoder_0._fn.3.free");
      EXPECT_EQ(map("decoder_0.2.fn.1.F.norm.bias"), "decoder_0._fn.4.Fm.norm.bias");
      EXPECT_THROW(map("encoder_0.1.fn.1.F.conv.weight"), std::invalid_argument);  // block 1 has no mixing
    } else {
      EXPECT_EQ(map("encoder_0.2.fn.0.F.conv.weight"), "encoder_0._fn.2.Fm.conv.weight");
      EXPECT_EQ(map("encoder_1.1.fn.0.G.conv.weight"), "encoder_1._fn.1.Gm.conv.weight");
      EXPECT_THROW(map("encoder_0.0.fn.0.free"), std::invalid_argument);
    }
    EXPECT_EQ(map("upsampling_0.fn.free"), "upsampling_0._fn.free");
  }
}

// What the trainer's model_options may change without changing a Python name.
TEST(PythonKeys, EveryTrainerVariantMapsToTheSameNames) {
  const std::vector<std::pair<std::string, Json>> resnet_variants = {
      {"checkpoint_transitions", Json{{"checkpoint_transitions", true}}},
      {"exact", Json{{"exact", true}, {"fraction_bits", 20}}},
      {"anchor_every", Json{{"anchor_every", 2}}},
      {"fused_backward off", Json{{"fused_backward", false}}},
      {"all", Json{{"checkpoint_transitions", true}, {"exact", true}, {"anchor_every", 2}}}};
  for (const auto* model : {"resnet32", "resnet164", "revnet38", "revnet164"}) {
    for (const auto& [what, options] : resnet_variants) {
      if (std::string(model).rfind("resnet", 0) == 0 && options.contains("exact")) continue;  // RevNets only
      SCOPED_TRACE(std::string(model) + " " + what);
      const auto built = trainer_classifier(model, "cifar10", options);
      expect_twin(*built, python_key_map(*built), model, "cifar10");
      if (!options.contains("checkpoint_transitions")) expect_twin(*built, python_key_map(model), model, "cifar10");
    }
  }
  const std::vector<std::pair<std::string, Json>> revvit_variants = {
      {"single_node", Json{{"single_node", true}}},
      {"exact", Json{{"exact", true}}},
      {"fused_backward off", Json{{"fused_backward", false}}}};
  for (const auto* model : {"revvit_tiny", "revvit_small"}) {
    for (const auto& [what, options] : revvit_variants) {
      SCOPED_TRACE(std::string(model) + " " + what);
      const auto built = trainer_classifier(model, "cifar10", options);
      expect_twin(*built, python_key_map(*built), model, "cifar10");
    }
  }
  const auto saving_off = trainer_iunet3d(Json{{"memory_saving", false}});
  expect_twin(*saving_off, python_key_map("iunet3d"), "iunet3d", "brain-extraction", kIUNet3dNotHeld);
}

TEST(PythonKeys, CheckpointedStemAndTransitionsLoseTheirWrapperLevel) {
  auto options = memcnn::models::model_options("revnet38").checkpoint_transitions(true);
  const auto map = python_key_map(options);
  EXPECT_EQ(map("stem.module.conv1.weight"), "conv1.weight");
  EXPECT_EQ(map("layers.1.0.module.downsample.1.running_mean"), "layer2.0.downsample.1.running_mean");
  EXPECT_EQ(map("layers.1.0.module.sub.bn1.weight"), "layer2.0.basicblock_sub.bn1.weight");
  EXPECT_EQ(map("layers.0.1.fn.G.conv2.weight"), "layer1.1.revblock._fn.Gm.conv2.weight");
  // Without checkpointing these names are not the model's.
  const auto plain = python_key_map("revnet38");
  EXPECT_THROW(plain("stem.module.conv1.weight"), std::invalid_argument);
  EXPECT_THROW(map("stem.conv1.weight"), std::invalid_argument);
}

// Names the model does not have: each throws std::invalid_argument naming it.
void expect_refused(const KeyMap& map, const std::vector<std::string>& names) {
  for (const auto& name : names) {
    try {
      const auto key = map(name);
      ADD_FAILURE() << "'" << name << "' was mapped to '" << key << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("'" + name + "'"), std::string::npos) << e.what();
    }
  }
}

TEST(PythonKeys, ForeignNamesThrow) {
  expect_refused(python_key_map("revnet38"),
                 {"", "fc", "fc.weight.data", "fc.running_mean", "conv1.weight",
                  "layer1.0.revblock._fn.Fm.conv1.weight",
                  "stem.conv1.bias", "layers.3.0.sub.conv1.weight", "layers.0.3.fn.F.conv1.weight",
                  "layers.0.01.fn.F.conv1.weight", "layers.0.-1.fn.F.conv1.weight",
                  "layers.0.0.fn.F.bn1.weight",            // the first block has no pre-activation
                  "layers.0.1.fn.F.conv3.weight",          // basic blocks have two convolutions
                  "layers.0.1.sub.conv1.weight",           // a coupling, not a residual block
                  "layers.1.0.fn.F.conv1.weight",          // a projection block, not a coupling
                  "layers.1.1.downsample.0.weight", "layers.1.0.downsample.2.weight", "bn_final.weight.x"});
  expect_refused(python_key_map("resnet164"),
                 {"layers.0.1.fn.F.conv1.weight", "layers.0.1.downsample.0.weight", "layers.0.0.sub.bn1.weight",
                  "layers.0.1.sub.conv4.weight"});
  expect_refused(python_key_map("vit_tiny"),
                 {"embedding.class_token", "blocks.6.attention.qkv.weight", "blocks.0.fn.F.qkv.weight",
                  "blocks.0.attention.fc1.weight", "head.running_mean", "embedding.position_embedding.weight"});
  expect_refused(python_key_map("revvit_small"),
                 {"blocks.0.attention.qkv.weight", "blocks.12.fn.F.qkv.weight", "blocks.0.fn.0.F.qkv.weight",
                  "blocks.0.fn.F.fc1.weight", "embedding.class_token.x"});
  expect_refused(python_key_map("iunet3d"),
                 {"iunet", "iunet.", "stem.1.weight", "iunet.encoder_0.0.fn.0.free", "iunet.decoder_2.0.fn.0.free",
                  "iunet.split_0.fn.x", "iunet.encoder_1.2.fn.0.free", "iunet.encoder_1.0.fn.2.F.conv.weight",
                  "iunet.encoder_1.0.fn.0.F.conv.weight", "iunet.encoder_1.0.fn.1.free",
                  "iunet.downsampling_2.fn.free", "iunet.encoder_1.0.fn.1.F.conv.bias"});
}

TEST(PythonKeys, UnknownModelsThrowListingTheKnownOnes) {
  try {
    python_key_map("resnet18");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    for (const auto& name : memcnn::models::python_key_model_names()) {
      EXPECT_NE(message.find(name), std::string::npos) << message;
    }
  }
  EXPECT_THROW(python_key_map(*torch::nn::Linear(2, 2)), std::invalid_argument);
}

TEST(PythonKeys, EveryModelOfTheTrainerHasAMap) {
  std::set<std::string> trainer;
  for (const auto& n : memcnn::models::model_names()) trainer.insert(n);
  for (const auto& n : memcnn::models::transformer_names()) trainer.insert(n);
  trainer.insert("iunet3d");
  const auto names = memcnn::models::python_key_model_names();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), trainer);
  for (const auto& n : names) EXPECT_NO_THROW(python_key_map(n)) << n;
}

}  // namespace
