#pragma once
// memcnn-train's GAN experiments (revgan2d, revgan3d, convgan2d, convgan3d on ch2-superresolution,
// fashion-edges and fashion-edges-unpaired): see memcnn/train/gan.h.

#include <cstdint>
#include <string>

struct GANRun {
  std::string model, dataset, data_dir, results_dir, experiments_file;
  bool fresh = false, evaluate = false, no_cuda = false, allow_recipe_change = false;
  int64_t max_iterations = 0, batch_size = 0, threads = 0;
  int64_t max_test = 0;  // evaluation.max_test: the first N test images (fashion); 0: the recipe's
};

int run_gan(const GANRun& run);
