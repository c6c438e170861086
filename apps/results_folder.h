#pragma once
// The results folder of one memcnn-train experiment, shared by its jobs (classifiers, iunet3d, GANs).

#include <memcnn/train/results_lock.h>

#include <filesystem>
#include <optional>

// Prepares `results` for the process that trains into it: takes the folder's lock when the job
// writes there (`writes`: not --evaluate or --export-weights; a lock taken over from a process that
// died is reported), removes the folder for --fresh (`fresh`), and creates it. A data-parallel job
// calls it on rank 0 only.
void prepare_results_folder(const std::filesystem::path& results, bool writes, bool fresh,
                            std::optional<memcnn::train::ResultsLock>& lock);
