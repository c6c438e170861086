// Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/), small files of every form each
// reader takes, made as the tests make theirs (data/tests/helpers.h) or by memcnn's own writers,
// plus the headers of real volumes (mricron-data's templates). Rerun after a format change:
//   cmake --build build --target fuzz_make_seeds && build/fuzz/fuzz_make_seeds fuzz/corpus

#include "../data/tests/helpers.h"
#include "targets/checkpoint.h"

#include <memcnn/data/nifti.h>
#include <memcnn/train/checkpoint.h>

#include <nifti2_io.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace {
namespace fs = std::filesystem;
using memcnn::data::test::Bytes;
namespace test = memcnn::data::test;

fs::path corpus;

void seed(const std::string& target, const std::string& name, const Bytes& bytes) {
  test::write_file((corpus / target / name).string(), bytes);
  std::cout << target << "/" << name << ": " << bytes.size() << " bytes\n";
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- nifti

Bytes written_nifti(const std::string& name, const torch::Tensor& data,
                    const memcnn::data::NiftiWriteOptions& options = {}) {
  test::TempDir dir;
  memcnn::data::write_nifti(dir / name, data, std::vector<double>(std::min<int64_t>(data.dim(), 3), 1.5), options);
  return test::read_whole_file(dir / name);
}

nifti_1_header header_of(const Bytes& file) {
  nifti_1_header header;
  std::memcpy(&header, file.data(), sizeof(header));
  return header;
}

Bytes with_header(Bytes file, const nifti_1_header& header) {
  std::memcpy(file.data(), &header, sizeof(header));
  return file;
}

torch::Tensor ramp(torch::Dtype dtype, std::vector<int64_t> shape) {
  int64_t count = 1;
  for (int64_t size : shape) count *= size;
  return torch::arange(count).remainder(97).reshape(shape).to(dtype);
}

void nifti_seeds() {
  seed("nifti", "uint8.nii", written_nifti("a.nii", ramp(torch::kUInt8, {4, 3, 2})));
  memcnn::data::NiftiWriteOptions scaled;
  scaled.scl_slope = 2.0;
  scaled.scl_inter = -1.0;
  seed("nifti", "float32-4d-scaled.nii.gz", written_nifti("a.nii.gz", ramp(torch::kFloat32, {3, 2, 2, 2}), scaled));
  seed("nifti", "float64.nii", written_nifti("a.nii", ramp(torch::kFloat64, {2, 2, 2})));
  seed("nifti", "int64-1d.nii", written_nifti("a.nii", ramp(torch::kInt64, {5})));

  // Big-endian: every header field and voxel swapped.
  Bytes native = written_nifti("a.nii", ramp(torch::kInt16, {3, 3, 2}));
  nifti_1_header swapped = header_of(native);
  nifti_swap_as_nifti1(&swapped);
  Bytes big_endian = with_header(native, swapped);
  nifti_swap_2bytes(18, big_endian.data() + 352);
  seed("nifti", "int16-big-endian.nii", big_endian);

  // uint16 (read widened), stored by hand: memcnn writes no unsigned 16-bit.
  Bytes wide = written_nifti("a.nii", ramp(torch::kInt16, {2, 2, 2}));
  nifti_1_header u16 = header_of(wide);
  u16.datatype = DT_UINT16;
  seed("nifti", "uint16.nii", with_header(wide, u16));

  // One comment extension between the header and the voxels.
  Bytes plain = written_nifti("a.nii", ramp(torch::kUInt8, {2, 2, 2}));
  plain[348] = 1;
  Bytes extension(16, 0);
  const int32_t esize = 16, ecode = NIFTI_ECODE_COMMENT;
  std::memcpy(extension.data(), &esize, 4);
  std::memcpy(extension.data() + 4, &ecode, 4);
  std::memcpy(extension.data() + 8, "memcnn!", 8);
  plain.insert(plain.begin() + 352, extension.begin(), extension.end());
  nifti_1_header extended = header_of(plain);
  extended.vox_offset = 368;
  seed("nifti", "extension.nii", with_header(plain, extended));

  // NIfTI-2, plain and gzip'd.
  Bytes voxels;
  for (int16_t v = 0; v < 12; ++v) {
    voxels.push_back(static_cast<uint8_t>(v * 37));
    voxels.push_back(static_cast<uint8_t>(v));
  }
  const Bytes two = test::nifti2_int16_file({3, 2, 2}, {{{0.5, 0, 0, 0}, {0, 0.6, 0, 0}, {0, 0, 0.7, 0}}}, voxels);
  seed("nifti", "nifti2-int16.nii", two);
  seed("nifti", "nifti2-int16.nii.gz", test::gzip(two));

  // Real headers (mricron-data): as they are with the first 512 voxel bytes (a truncated file),
  // and with the dims cut to what those bytes hold (a whole volume on the template's grid).
  for (const char* name : {"ch2.nii.gz", "inia19-t1-brain.nii.gz", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz"}) {
    const std::string path = std::string("/usr/share/mricron/templates/") + name;
    if (!fs::exists(path)) {
      std::cerr << "skipped " << path << " (install mricron-data)\n";
      continue;
    }
    // Decompressed with nifticlib's znz layer (zlib underneath).
    znzFile in = znzopen(path.c_str(), "rb", 1);
    Bytes header(352);
    znzread(header.data(), 1, header.size(), in);
    const nifti_1_header h1 = header_of(header);
    Bytes head(static_cast<size_t>(h1.vox_offset) + 512);
    znzrewind(in);
    znzread(head.data(), 1, head.size(), in);
    znzclose(in);
    const std::string stem = std::string(name).substr(0, std::string(name).find(".nii"));
    seed("nifti", stem + "-truncated.nii", head);
    nifti_1_header cut = h1;
    const int bytes_per_voxel = cut.bitpix / 8;
    cut.dim[1] = 8;
    cut.dim[2] = 8;
    cut.dim[3] = static_cast<int16_t>(512 / (64 * bytes_per_voxel));
    seed("nifti", stem + "-8x8.nii", with_header(head, cut));
  }
}

// ---- CIFAR

void cifar_seeds() {
  seed("cifar_batch", "cifar10-2.bin", concat({0}, test::cifar_records({{3}, {9}}, 0)));
  seed("cifar_batch", "cifar100-fine-2.bin", concat({1}, test::cifar_records({{4, 99}, {19, 0}}, 5)));
  seed("cifar_batch", "cifar100-coarse-1.bin", concat({2}, test::cifar_records({{19, 42}}, 7)));

  // The target gzips a tar that is not gzip'd already: most seeds are the tar itself.
  const Bytes batch = test::cifar_records({{1}, {2}}, 0);
  seed("cifar_targz", "cifar10.tar",
       test::make_tar({{"cifar-10-batches-bin/", {}, '5'},
                       {"cifar-10-batches-bin/test_batch.bin", batch},
                       {"cifar-10-batches-bin/batches.meta.txt", Bytes{'c', 'a', 't', '\n'}}}));
  seed("cifar_targz", "flat.tar.gz", test::gzip(test::make_tar({{"test_batch.bin", test::cifar_records({{5}}, 3)}})));
}

// ---- IDX

// The idx target's input: flags (bit 0: gzip the images, bit 1: the labels), the images file's
// length (4 bytes, big-endian), the images file, the labels file.
Bytes idx_input(uint8_t flags, const Bytes& images, const Bytes& labels) {
  const auto n = static_cast<uint32_t>(images.size());
  Bytes input{flags, static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16), static_cast<uint8_t>(n >> 8),
              static_cast<uint8_t>(n)};
  return concat(concat(input, images), labels);
}

void idx_seeds() {
  seed("idx", "plain-2.idx", idx_input(0, test::idx_images(2), test::idx_labels({3, 9})));
  seed("idx", "gzip-by-target-3.idx", idx_input(3, test::idx_images(3), test::idx_labels({0, 1, 2})));
  seed("idx", "gzip-1.idx", idx_input(0, test::gzip(test::idx_images(1)), test::gzip(test::idx_labels({7}))));
}

// ---- checkpoint

Bytes saved_checkpoint(bool adamw, bool with_recipe) {
  torch::manual_seed(0);
  auto model = memcnn::fuzz::checkpoint_model();
  auto optimizer = memcnn::fuzz::checkpoint_optimizer(model, adamw);
  optimizer->zero_grad();
  model->forward(torch::randn({4, 3})).sum().backward();
  optimizer->step();
  test::TempDir dir;
  const memcnn::train::Checkpointer checkpointer(dir.path());
  const memcnn::train::CheckpointInfo info =
      with_recipe ? memcnn::train::CheckpointInfo(7, 12.5, memcnn::fuzz::checkpoint_recipe(adamw))
                  : memcnn::train::CheckpointInfo(3);
  checkpointer.save(*model, *optimizer, info);
  return test::read_whole_file(checkpointer.latest_path());
}

// A checkpoint of the same layers with other sizes: loading it must fail, not reshape the model.
Bytes other_architecture_checkpoint() {
  torch::nn::Sequential model(torch::nn::Linear(3, 5), torch::nn::BatchNorm1d(5));
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  test::TempDir dir;
  const memcnn::train::Checkpointer checkpointer(dir.path());
  checkpointer.save(*model, optimizer, memcnn::train::CheckpointInfo(5, 1.0, memcnn::fuzz::checkpoint_recipe(false)));
  return test::read_whole_file(checkpointer.latest_path());
}

void checkpoint_seeds() {
  seed("checkpoint", "sgd.pt", saved_checkpoint(false, true));
  seed("checkpoint", "adamw.pt", saved_checkpoint(true, true));
  seed("checkpoint", "sgd-no-recipe.pt", saved_checkpoint(false, false));
  seed("checkpoint", "other-architecture.pt", other_architecture_checkpoint());
}

// ---- experiments

Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }

void experiments_seeds(const fs::path& source) {
  seed("experiments", "shipped.json", test::read_whole_file((source / "train" / "experiments.json").string()));
  memcnn::train::TrainConfig every;
  every.model = "revnet38";
  every.dataset = "cifar10";
  every.optimizer = "adamw";
  every.lr_schedule = "cosine";
  every.warmup_iterations = 10;
  every.min_lr = 0.001;
  every.label_smoothing = 0.1;
  every.gradient_clipping = 1.0;
  every.random_erasing = 0.25;
  every.autocast = "bfloat16";
  every.model_options = {{"depth", 12}, {"heads", {3, 6}}};
  seed("experiments", "every-field.json", text(memcnn::train::Json{{"x", every.to_json()}}.dump(1)));
  seed("experiments", "bases.json",
       text(R"({"default": {"batch_size": 10, "optimizer": {"lr": 0.5, "momentum": 0.8}},
"cifar10": {"base": "default", "dataset": "cifar10"},
"resnet32": {"base": ["default"], "model": "resnet32", "optimizer": {"lr": 0.2}},
"resnet32_cifar10": {"base": ["cifar10", "resnet32"], "lr_milestones": [2, 3], "max_iterations": 4}})"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " CORPUS_DIR (fuzz/corpus)\n";
    return 2;
  }
  corpus = argv[1];
  nifti_seeds();
  cifar_seeds();
  idx_seeds();
  checkpoint_seeds();
  experiments_seeds(fs::path(MEMCNN_SOURCE_DIR));
  return 0;
}
