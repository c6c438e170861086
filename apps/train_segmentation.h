#pragma once
// memcnn-train's segmentation experiments (iunet3d brain-extraction): see memcnn/train/segmentation.h.

#include <cstdint>
#include <string>

struct SegmentationRun {
  std::string model, dataset, data_dir, results_dir, experiments_file;
  bool fresh = false, evaluate = false, no_cuda = false;
  int64_t max_iterations = 0, batch_size = 0, threads = 0;
  bool allow_recipe_change = false;
  std::string weights, export_weights;  // torch.save'd state dicts with the Python twin's names
};

// The default folder of the volumes: Debian's mricron-data.
inline const char* kDefaultVolumeFolder = "/usr/share/mricron/templates";

int run_segmentation(const SegmentationRun& run);
