// PyTorch's torch.save files read and written in C++ (state_dict.h): files written by PyTorch 1.13
// and in PyTorch 2.x's layout (tests/data/torch_files, made by make_torch_files.py there), loading
// by name, and what a damaged, foreign or hostile file gives.

#include <memcnn/state_dict.h>

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace fs = std::filesystem;
using namespace std::string_literals;  // pickles hold NUL bytes

namespace {

const fs::path kFiles = fs::path(MEMCNN_SOURCE_DIR) / "tests" / "data" / "torch_files";

// The values make_torch_files.py gave every tensor: (i * 7 + seed) % 23 - 11 over the flat index,
// divided by 4 for floating point types.
torch::Tensor expected(c10::IntArrayRef shape, torch::Dtype dtype, int64_t seed) {
  const int64_t n = c10::multiply_integers(shape);
  auto flat = torch::remainder(torch::arange(n, torch::kDouble) * 7 + seed, 23) - 11;
  if (dtype == torch::kBool) return (flat > 0).reshape(shape);
  if (c10::isFloatingType(dtype)) flat = flat / 4;
  return flat.to(dtype).reshape(shape);
}

// The C++ twin of make_torch_files.py's module.
struct SmallImpl : torch::nn::Module {
  explicit SmallImpl(int64_t fc_out = 2) {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 3)));
    bn = register_module("bn", torch::nn::BatchNorm2d(3));
    fc = register_module("fc", torch::nn::Linear(4, fc_out));
    register_buffer("float64", torch::zeros({2, 3}, torch::kDouble));
    register_buffer("float16", torch::zeros({5}, torch::kHalf));
    register_buffer("bf16", torch::zeros({5}, torch::kBFloat16));
    register_buffer("flags", torch::zeros({4}, torch::kBool));
    register_buffer("ints", torch::zeros({3}, torch::kInt));
    register_buffer("square", torch::zeros({3, 4}));
    register_buffer("square_t", torch::zeros({4, 3}));
    register_buffer("scalar", torch::zeros({}));
    register_buffer("empty", torch::zeros({0, 3}));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(Small);

const std::vector<std::string> kSmallKeys = {
    "float64", "float16", "bf16", "flags", "ints", "square", "square_t", "scalar", "empty",
    "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
    "bn.num_batches_tracked", "fc.weight", "fc.bias"};

void expect_small_values(const memcnn::StateDict& sd) {
  EXPECT_TRUE(torch::equal(sd["conv.weight"], expected({3, 2, 3, 3}, torch::kFloat, 0)));
  EXPECT_TRUE(torch::equal(sd["conv.bias"], expected({3}, torch::kFloat, 1)));
  EXPECT_TRUE(torch::equal(sd["bn.weight"], expected({3}, torch::kFloat, 2)));
  EXPECT_TRUE(torch::equal(sd["bn.bias"], expected({3}, torch::kFloat, 3)));
  EXPECT_TRUE(torch::equal(sd["fc.weight"], expected({2, 4}, torch::kFloat, 4)));
  EXPECT_TRUE(torch::equal(sd["fc.bias"], expected({2}, torch::kFloat, 5)));
  EXPECT_TRUE(torch::equal(sd["bn.running_mean"], expected({3}, torch::kFloat, 20)));
  EXPECT_TRUE(torch::equal(sd["bn.running_var"], expected({3}, torch::kFloat, 21).abs() + 1));
  EXPECT_EQ(sd["bn.num_batches_tracked"].scalar_type(), torch::kLong);
  EXPECT_EQ(sd["bn.num_batches_tracked"].item<int64_t>(), 12345678901);
  EXPECT_TRUE(torch::equal(sd["float64"], expected({2, 3}, torch::kDouble, 5)));
  EXPECT_TRUE(torch::equal(sd["float16"], expected({5}, torch::kHalf, 6)));
  EXPECT_TRUE(torch::equal(sd["bf16"], expected({5}, torch::kBFloat16, 7)));
  EXPECT_TRUE(torch::equal(sd["flags"], expected({4}, torch::kBool, 8)));
  EXPECT_TRUE(torch::equal(sd["ints"], expected({3}, torch::kInt, 9)));
  EXPECT_TRUE(torch::equal(sd["square"], expected({3, 4}, torch::kFloat, 10)));
  EXPECT_TRUE(torch::equal(sd["square_t"], expected({3, 4}, torch::kFloat, 10).t()));
  EXPECT_EQ(sd["scalar"].dim(), 0);
  EXPECT_TRUE(torch::equal(sd["scalar"], expected({}, torch::kFloat, 11)));
  EXPECT_EQ(sd["empty"].sizes(), (std::vector<int64_t>{0, 3}));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

fs::path temporary(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("memcnn_state_dict_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

class TorchFiles : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchFiles, ReadsAStateDictWithItsTypesOrderAndSharing) {
  const memcnn::StateDict sd = memcnn::read_state_dict((kFiles / GetParam()).string());
  EXPECT_EQ(sd.keys(), kSmallKeys);
  expect_small_values(sd);
  // A view saved with the tensor it views shares its memory again, as torch.load gives it.
  EXPECT_EQ(sd["square_t"].strides(), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(sd["square_t"].data_ptr(), sd["square"].data_ptr());
  for (const auto& item : sd) EXPECT_FALSE(item.value().requires_grad()) << item.key();
}

TEST_P(TorchFiles, LoadsIntoTheModuleByName) {
  Small module;
  const auto result = memcnn::load_state_dict(*module, (kFiles / GetParam()).string());
  EXPECT_TRUE(result.complete());
  EXPECT_EQ(result.loaded, 18);
  const memcnn::StateDict own = memcnn::module_state_dict(*module);
  expect_small_values(own);
  EXPECT_TRUE(module->conv->weight.requires_grad());  // still a parameter that trains
}

INSTANTIATE_TEST_SUITE_P(StateDict, TorchFiles,
                         ::testing::Values("state_dict_torch113.pt", "state_dict_torch2x_layout.pt"));

TEST(StateDict, ModuleStateDictHasPythonsOrderAndNames) {
  Small module;
  EXPECT_EQ(memcnn::module_state_dict(*module).keys(), kSmallKeys);
  const auto renamed = memcnn::module_state_dict(*module, [](const std::string& name) { return "model." + name; });
  EXPECT_EQ(renamed.keys().front(), "model.float64");
}

TEST(StateDict, StrictLoadNamesMissingUnexpectedAndMisshapenKeysAndChangesNothing) {
  Small module(/*fc_out=*/3);
  module->register_buffer("extra", torch::zeros({2}));
  const torch::Tensor before = module->conv->weight.clone();
  const std::string message = error_of([&] {
    memcnn::load_state_dict(*module, (kFiles / "state_dict_torch113.pt").string());
  });
  EXPECT_NE(message.find("state_dict_torch113.pt' does not match the module"), std::string::npos) << message;
  EXPECT_NE(message.find("missing keys (1): extra"), std::string::npos) << message;
  EXPECT_NE(message.find("fc.weight [2, 4] in the file, [3, 4] in the module"), std::string::npos) << message;
  EXPECT_NE(message.find("fc.bias [2] in the file, [3] in the module"), std::string::npos) << message;
  EXPECT_TRUE(torch::equal(module->conv->weight, before));

  const auto result = memcnn::load_state_dict(*module, (kFiles / "state_dict_torch113.pt").string(),
                                              memcnn::LoadStateDictOptions().strict(false));
  EXPECT_EQ(result.missing, std::vector<std::string>{"extra"});
  EXPECT_EQ(result.mismatched.size(), 2u);
  EXPECT_TRUE(result.unexpected.empty());
  EXPECT_EQ(result.loaded, 16);
  EXPECT_TRUE(torch::equal(module->conv->weight, expected({3, 2, 3, 3}, torch::kFloat, 0)));
}

TEST(StateDict, KeyMapRenamesAndReportsUnexpectedKeys) {
  Small module;
  const memcnn::KeyMap map = [](const std::string& name) { return name == "fc.weight" ? "head.weight" : name; };
  memcnn::StateDict sd = memcnn::read_state_dict((kFiles / "state_dict_torch113.pt").string());
  const auto result = memcnn::load_state_dict(*module, sd, memcnn::LoadStateDictOptions().strict(false).key_map(map));
  EXPECT_EQ(result.missing, std::vector<std::string>{"head.weight"});
  EXPECT_EQ(result.unexpected, std::vector<std::string>{"fc.weight"});

  memcnn::StateDict renamed;
  for (const auto& item : sd) renamed.insert(item.key() == "fc.weight" ? "head.weight" : item.key(), item.value());
  EXPECT_TRUE(memcnn::load_state_dict(*module, renamed, memcnn::LoadStateDictOptions().key_map(map)).complete());
  EXPECT_TRUE(torch::equal(module->fc->weight, expected({2, 4}, torch::kFloat, 4)));
}

TEST(StateDict, AnEmptyMappedNameIsNeitherWrittenNorExpected) {
  Small module;
  const memcnn::KeyMap map = [](const std::string& name) { return name == "square_t" ? std::string() : name; };
  const memcnn::StateDict written = memcnn::module_state_dict(*module, map);
  EXPECT_FALSE(written.contains("square_t"));
  EXPECT_EQ(written.size(), kSmallKeys.size() - 1);
  const auto result = memcnn::load_state_dict(*module, written, memcnn::LoadStateDictOptions().key_map(map));
  EXPECT_TRUE(result.complete());
  EXPECT_EQ(result.loaded, static_cast<int64_t>(kSmallKeys.size()) - 1);
}

TEST(StateDict, ConvertsToTheModulesTypeAndKeepsItsDevice) {
  Small module;
  module->to(torch::kDouble);
  memcnn::load_state_dict(*module, (kFiles / "state_dict_torch113.pt").string());
  EXPECT_EQ(module->fc->weight.scalar_type(), torch::kDouble);
  EXPECT_TRUE(torch::equal(module->fc->weight, expected({2, 4}, torch::kFloat, 4).to(torch::kDouble)));
}

TEST(StateDict, WrittenFilesReadBackEqualWithViewsSharingStorage) {
  Small module;
  memcnn::load_state_dict(*module, (kFiles / "state_dict_torch113.pt").string());
  // Make square_t a view again, as in the Python module.
  module->named_buffers()["square_t"].set_(module->named_buffers()["square"].t());
  const fs::path path = temporary("written.pt");
  memcnn::write_state_dict(memcnn::module_state_dict(*module), path.string());
  const memcnn::StateDict back = memcnn::read_state_dict(path.string());
  EXPECT_EQ(back.keys(), kSmallKeys);
  expect_small_values(back);
  EXPECT_EQ(back["square_t"].data_ptr(), back["square"].data_ptr());
  fs::remove_all(path.parent_path());
}

TEST(StateDict, ReadsAnOptimizersNestedState) {
  const c10::IValue value = memcnn::read_torch_file((kFiles / "optimizer_sgd_torch113.pt").string());
  const auto dict = value.toGenericDict();
  const auto state = dict.at("state").toGenericDict();
  ASSERT_EQ(state.size(), 2u);
  // momentum_buffer after one step is the gradient (with weight decay): d/da of 2*sum(a), d/db of sum(b*b).
  const auto a = expected({2, 2}, torch::kFloat, 1), b = expected({3}, torch::kFloat, 2);
  EXPECT_TRUE(torch::allclose(state.at(0).toGenericDict().at("momentum_buffer").toTensor(), 2 + 2e-4 * a));
  EXPECT_TRUE(torch::allclose(state.at(1).toGenericDict().at("momentum_buffer").toTensor(), 2 * b + 2e-4 * b));
  const auto group = dict.at("param_groups").toListRef()[0].toGenericDict();
  EXPECT_EQ(group.at("lr").toDouble(), 0.1);
  EXPECT_EQ(group.at("dampening").toInt(), 0);
  EXPECT_FALSE(group.at("nesterov").toBool());
  EXPECT_TRUE(group.at("foreach").isNone());
  EXPECT_EQ(group.at("params").toListRef().size(), 2u);
  EXPECT_EQ(group.at("params").toListRef()[1].toInt(), 1);
}

TEST(StateDict, ReadsPlainDataAndWritesItBack) {
  for (const bool rewritten : {false, true}) {
    c10::IValue value = memcnn::read_torch_file((kFiles / "plain_data_torch113.pt").string());
    if (rewritten) {
      const fs::path path = temporary("plain.pt");
      memcnn::write_torch_file(value, path.string());
      value = memcnn::read_torch_file(path.string());
      fs::remove_all(path.parent_path());
    }
    const auto dict = value.toGenericDict();
    const auto tuple = dict.at("tuple").toTupleRef().elements();
    ASSERT_EQ(tuple.size(), 5u);
    EXPECT_EQ(tuple[0].toInt(), 1);
    EXPECT_EQ(tuple[1].toDouble(), 2.5);
    EXPECT_EQ(tuple[2].toStringRef(), "x");
    EXPECT_TRUE(tuple[3].isNone());
    EXPECT_TRUE(tuple[4].toBool());
    const auto list = dict.at("list").toListRef();
    EXPECT_TRUE(torch::equal(list[0].toTensor(), expected({2}, torch::kLong, 3)));
    EXPECT_TRUE(list[0].toTensor().is_same(list[1].toTensor()) ||
                list[0].toTensor().data_ptr() == list[1].toTensor().data_ptr());
    EXPECT_EQ(dict.at("big").toInt(), int64_t{1} << 40);
    EXPECT_EQ(dict.at("negative").toInt(), -3);
    EXPECT_EQ(dict.at("huge").toInt(), -(int64_t{1} << 62));
    EXPECT_EQ(dict.at("float").toDouble(), -0.125);
    EXPECT_EQ(dict.at(7).toStringRef(), "int key");
    const auto deeper = dict.at("nested").toGenericDict().at("deeper").toListRef();
    EXPECT_EQ(deeper[1].toListRef()[1].toTupleRef().elements()[0].toInt(), 3);
  }
}

// ---- Python opens what C++ writes (skipped where Debian's python3 has no torch).
TEST(StateDict, PythonLoadsTheWrittenFileWithWeightsOnly) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with torch (python3-torch) is not installed";
  Small module;
  memcnn::load_state_dict(*module, (kFiles / "state_dict_torch113.pt").string());
  const fs::path path = temporary("for_python.pt");
  memcnn::write_state_dict(memcnn::module_state_dict(*module), path.string());
  const std::string script =
      "import sys, torch\n"
      "mine = torch.load(sys.argv[1], weights_only=True)\n"
      "theirs = torch.load(sys.argv[2], weights_only=True)\n"
      "assert list(mine) == list(theirs), (list(mine), list(theirs))\n"
      "for k in theirs:\n"
      "    assert mine[k].dtype == theirs[k].dtype and torch.equal(mine[k], theirs[k]), k\n"
      "print('python: equal')\n";
  const fs::path script_path = temporary("check.py");
  std::ofstream(script_path) << script;
  const std::string command = "/usr/bin/python3 " + script_path.string() + " " + path.string() + " " +
                              (kFiles / "state_dict_torch113.pt").string();
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  fs::remove_all(path.parent_path());
}

// ---- Files that are not state dicts: each gives an error naming the file and what it is.
TEST(StateDict, ForeignFilesGiveClearErrors) {
  const auto read = [](const fs::path& path) { return error_of([&] { memcnn::read_state_dict(path.string()); }); };
  EXPECT_NE(read(kFiles / "missing.pt").find("no such file"), std::string::npos);
  const std::string legacy = read(kFiles / "legacy_torch113.pt");
  EXPECT_NE(legacy.find("legacy format"), std::string::npos) << legacy;
  EXPECT_NE(legacy.find("legacy_torch113.pt"), std::string::npos) << legacy;
  const std::string model = read(kFiles / "model_torch113.pt");
  EXPECT_NE(model.find("torch.nn.modules.linear.Linear"), std::string::npos) << model;
  EXPECT_NE(model.find("save model.state_dict()"), std::string::npos) << model;
  const std::string script = read(kFiles / "torchscript_torch113.pt");
  EXPECT_NE(script.find("TorchScript archive"), std::string::npos) << script;
  const std::string optimizer = read(kFiles / "optimizer_sgd_torch113.pt");
  EXPECT_NE(optimizer.find("its entry 'state' is a GenericDict, not a tensor"), std::string::npos) << optimizer;
  const fs::path text = temporary("text.pt");
  std::ofstream(text) << "hello, not a tensor file";
  EXPECT_NE(read(text).find("not a zip archive"), std::string::npos);
  fs::remove_all(text.parent_path());
}

TEST(StateDict, TruncatedOrDamagedFilesGiveClearErrors) {
  std::ifstream in(kFiles / "state_dict_torch113.pt", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const fs::path path = temporary("damaged.pt");
  for (const size_t cut : {bytes.size() / 2, bytes.size() - 10, size_t{100}}) {
    std::ofstream(path, std::ios::binary) << bytes.substr(0, cut);
    const std::string message = error_of([&] { memcnn::read_state_dict(path.string()); });
    EXPECT_NE(message.find("damaged.pt' as a torch.save file"), std::string::npos) << message;
  }
  // A bit flipped inside the first tensor's bytes (after its local header: 30 bytes, name, extra field).
  const size_t header = bytes.rfind("PK\x03\x04", bytes.find("/data/0"));
  const auto le16 = [&](size_t at) { return static_cast<uint8_t>(bytes[at]) | static_cast<uint8_t>(bytes[at + 1]) << 8; };
  std::string flipped = bytes;
  flipped[header + 30 + le16(header + 26) + le16(header + 28) + 5] ^= 0x40;
  std::ofstream(path, std::ios::binary) << flipped;
  const std::string message = error_of([&] { memcnn::read_state_dict(path.string()); });
  EXPECT_NE(message.find("CRC-32"), std::string::npos) << message;
  fs::remove_all(path.parent_path());
}

// ---- Hostile pickles, in a valid archive.
std::string archive_with(const std::string& pickle, const std::vector<std::pair<std::string, std::string>>& records = {}) {
  std::string bytes;
  caffe2::serialize::PyTorchStreamWriter writer([&bytes](const void* data, size_t size) {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  for (const auto& [name, content] : records) writer.writeRecord(name, content.data(), content.size());
  writer.writeEndOfFile();
  return bytes;
}

std::string read_error(const std::string& archive) {
  const fs::path path = temporary("hostile.pt");
  std::ofstream(path, std::ios::binary) << archive;
  const std::string message = error_of([&] { memcnn::read_torch_file(path.string()); });
  fs::remove_all(path.parent_path());
  return message;
}

const std::string kProto = "\x80\x02"s;

TEST(StateDict, HostilePicklesAreRefused) {
  // A list put into itself would be a cycle that is never freed.
  EXPECT_NE(read_error(archive_with(kProto + "]q\x00h\x00" "a."s)).find("into itself"), std::string::npos);
  // A list changed after it was put into another one.
  EXPECT_NE(read_error(archive_with(kProto + "]q\x00]h\x00" "ah\x00K\x01" "a."s)).find("cycle"), std::string::npos);
  // Nesting deeper than the limit: 100 lists, each appended to the one before.
  std::string deep = kProto;
  for (int i = 0; i < 100; ++i) deep += "]";
  for (int i = 0; i < 99; ++i) deep += "a";
  EXPECT_NE(read_error(archive_with(deep + ".")).find("nested more than"), std::string::npos);
  // Calls of anything but the rebuilding functions.
  EXPECT_NE(read_error(archive_with(kProto + "cos\nsystem\nX\x02\x00\x00\x00id\x85R."s)).find("os.system"),
            std::string::npos);
  // A tensor reaching beyond its storage (4 floats, viewed as 10).
  const std::string tensor = kProto + "ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
                             "X\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x04tQK\x00K\x0a\x85K\x01\x85\x89)tR."s;
  EXPECT_NE(read_error(archive_with(tensor, {{"data/0", std::string(16, '\0')}})).find("beyond its storage"),
            std::string::npos);
  // The storage's record is shorter than it claims.
  EXPECT_NE(read_error(archive_with(tensor, {{"data/0", std::string(12, '\0')}})).find("holds 12 bytes"),
            std::string::npos);
  // A cut pickle, and an opcode torch.save does not write.
  EXPECT_NE(read_error(archive_with(kProto + "]")).find("cut short"), std::string::npos);
  EXPECT_NE(read_error(archive_with(kProto + "I1\n.")).find("opcode 0x49"), std::string::npos);
}

TEST(StateDict, SharedTuplesDoNotMultiply) {
  // t(i+1) = (t(i), t(i)) for 40 levels: 2^40 leaves if each reference were copied.
  std::string pickle = kProto + "K\x01\x85q\x00"s;
  for (int i = 0; i < 40; ++i) pickle += "0h\x00h\x00\x86q\x00"s;  // drop the last, pair it
  pickle += ".";
  const c10::IValue value = memcnn::read_torch_file([&] {
    const fs::path path = temporary("tuples.pt");
    std::ofstream(path, std::ios::binary) << archive_with(pickle);
    return path.string();
  }());
  EXPECT_TRUE(value.isTuple());
  fs::remove_all(temporary("x").parent_path());
}

}  // namespace
