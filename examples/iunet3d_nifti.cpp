// Tutorial: a 3-D iUNet on a NIfTI volume. memcnn::data::read_nifti reads a brain MRI (the "ch2"
// template of Debian's mricron-data) and its brain mask into tensors; a memcnn::models::
// IUNetSegmentation learns, for a few steps on one 32^3 crop, to tell brain from background. The
// iUNet inside is invertible as a whole and runs under memory-saving wrappers: the program checks
// its inverse and measures a training step's peak memory with memory saving on and off.
//
//   memcnn-example-iunet3d-nifti [IMAGE.nii.gz MASK.nii.gz]
//
// Defaults: /usr/share/mricron/templates/ch2.nii.gz and ch2bet.nii.gz (its brain-extracted twin).

#include <memcnn/data/nifti.h>
#include <memcnn/memory.h>
#include <memcnn/models/iunet.h>

#include <torch/torch.h>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr int64_t kCrop = 32;

// [crop]
// The crop [N=1, C=1, 32, 32, 32] starting at `origin` (voxel indices, NIfTI's i, j, k order).
torch::Tensor crop(const torch::Tensor& volume, const std::vector<int64_t>& origin) {
  torch::Tensor patch = volume;
  for (int64_t d = 0; d < 3; ++d) patch = patch.narrow(d, origin[static_cast<std::size_t>(d)], kCrop);
  return patch.contiguous().view({1, 1, kCrop, kCrop, kCrop});
}

// A crop on the brain's edge: walking along the first axis through the middle of the volume, the
// first crop of which between 40% and 60% is brain.
std::vector<int64_t> crop_on_the_edge(const torch::Tensor& mask) {
  std::vector<int64_t> origin{0, (mask.size(1) - kCrop) / 2, (mask.size(2) - kCrop) / 2};
  for (; origin[0] + kCrop <= mask.size(0); origin[0] += 4) {
    const double brain = crop(mask, origin).mean().item<double>();
    if (brain >= 0.4 && brain <= 0.6) return origin;
  }
  throw std::runtime_error("no 32^3 crop along the first axis is 40-60% brain; is MASK the image's brain mask?");
}
// [crop]

// [model]
// Three levels: 4 channels at 32^3, 16 at 16^3, 64 at 8^3 (each split keeps half the channels as
// the skip connection; the orthogonal downsampling folds a 2x2x2 block of the rest into channels).
// One invertible block (an additive coupling of conv-GroupNorm-LeakyReLU, with an orthogonal
// channel mixing) per level and side. A 3x3x3 convolution takes the 1-channel image to 4 channels,
// a 1x1x1 convolution the iUNet's output to one logit per voxel.
memcnn::models::IUNetSegmentation make_model() {
  memcnn::models::IUNetOptions iunet({4, 16, 64}, {1, 1, 1}, /*dims=*/3);
  return memcnn::models::IUNetSegmentation(memcnn::models::IUNetSegmentationOptions(1, 1, iunet));
}
// [model]

// [memory]
// Peak bytes of one training step, with the iUNet's memory saving on or off (same weights).
int64_t step_bytes(memcnn::models::IUNetSegmentation& model, bool saving, const torch::Tensor& image,
                   const torch::Tensor& mask) {
  model->iunet->set_memory_saving(saving);
  memcnn::MemoryProbe probe;
  torch::binary_cross_entropy_with_logits(model->forward(image), mask).backward();
  const int64_t bytes = probe.peak_above_start();
  model->zero_grad();
  model->iunet->set_memory_saving(true);
  return bytes;
}
// [memory]

double dice(const torch::Tensor& logits, const torch::Tensor& mask) {
  const auto predicted = logits.gt(0), truth = mask.gt(0.5);
  const double both = (predicted & truth).sum().item<double>();
  return 2 * both / (predicted.sum().item<double>() + truth.sum().item<double>());
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string templates = "/usr/share/mricron/templates/";
  const std::string image_path = argc > 2 ? argv[1] : templates + "ch2.nii.gz";
  const std::string mask_path = argc > 2 ? argv[2] : templates + "ch2bet.nii.gz";
  memcnn::enable_cpu_memory_tracking();
  torch::manual_seed(0);
  bool ok = true;

  // [read]
  // read_nifti gives the voxels as a tensor [nx, ny, nz] (NIfTI's order) with the header's grid.
  const memcnn::data::NiftiVolume image_volume = memcnn::data::read_nifti(image_path);
  const memcnn::data::NiftiVolume mask_volume = memcnn::data::read_nifti(mask_path);
  std::cout << image_volume.path << ": " << image_volume.data.sizes() << " voxels, voxel size "
            << image_volume.spacing[0] << " x " << image_volume.spacing[1] << " x " << image_volume.spacing[2]
            << (image_volume.xyz_units == 2 ? " mm" : "") << "\n";  // 2: NIFTI_UNITS_MM
  // Intensities normalised to zero mean and unit variance; the mask is the brain-extracted image's
  // nonzero voxels.
  const torch::Tensor raw = image_volume.data.to(torch::kFloat32);
  const torch::Tensor volume = (raw - raw.mean()) / raw.std();
  const torch::Tensor brain = mask_volume.data.gt(0).to(torch::kFloat32);
  const std::vector<int64_t> origin = crop_on_the_edge(brain);
  const torch::Tensor image = crop(volume, origin), mask = crop(brain, origin);
  std::cout << "crop " << kCrop << "^3 at voxel (" << origin[0] << ", " << origin[1] << ", " << origin[2] << "), "
            << std::fixed << std::setprecision(1) << 100 * mask.mean().item<double>() << "% brain\n";
  // [read]

  // [train]
  auto model = make_model();
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-2));
  double first_loss = 0, last_loss = 0;
  for (int step = 0; step < 6; ++step) {
    optimizer.zero_grad();
    const torch::Tensor logits = model->forward(image);
    torch::Tensor loss = torch::binary_cross_entropy_with_logits(logits, mask);
    loss.backward();
    optimizer.step();
    if (step == 0) first_loss = loss.item<double>();
    last_loss = loss.item<double>();
    std::cout << "step " << step << "  loss " << std::setprecision(4) << last_loss << "  Dice "
              << dice(logits.detach(), mask) << "\n";
  }
  const bool decreased = last_loss < first_loss;
  std::cout << (decreased ? "loss decreased" : "loss did NOT decrease") << "\n";
  ok = ok && decreased;
  // [train]

  // [inverse]
  // The iUNet between the two convolutions is invertible: its input comes back from its output.
  {
    torch::NoGradGuard no_grad;
    model->eval();
    const torch::Tensor features = model->stem->forward(image);  // [1, 4, 32, 32, 32]
    const torch::Tensor rebuilt = model->iunet->inverse(model->iunet->forward(features));
    const double error = (rebuilt - features).abs().max().item<double>() / features.abs().max().item<double>();
    std::cout << "iUNet: relative |inverse(forward(h)) - h| = " << std::scientific << std::setprecision(2) << error
              << (error < 1e-4 ? ": inverse matches" : ": inverse DIFFERS") << "\n";
    ok = ok && error < 1e-4;
    model->train();
  }
  // [inverse]

  // [measure]
  step_bytes(model, true, image, mask);  // allocates the gradients before the measured steps
  const int64_t with = step_bytes(model, true, image, mask);
  const int64_t without = step_bytes(model, false, image, mask);
  std::cout << "training step peak: " << memcnn::format_mib(without, 2) << " without memory saving, "
            << memcnn::format_mib(with, 2) << " with\n";
  std::cout << (with < without ? "memory saving saves " + memcnn::format_mib(without - with, 2)
                               : std::string("memory saving saved NOTHING"))
            << "\n";
  ok = ok && with < without;
  // [measure]

  std::cout << (ok ? "all checks passed" : "a check FAILED") << "\n";
  return ok ? 0 : 1;
} catch (const std::exception& error) {
  std::cerr << "memcnn-example-iunet3d-nifti: " << error.what() << "\n";
  return 1;
}
