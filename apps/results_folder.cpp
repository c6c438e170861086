#include "results_folder.h"

#include <iostream>

void prepare_results_folder(const std::filesystem::path& results, bool writes, bool fresh,
                            std::optional<memcnn::train::ResultsLock>& lock) {
  if (writes) {
    lock.emplace(results.string());
    if (const auto previous = lock->taken_over_from()) {
      std::cout << "[memcnn-train] took over " << lock->path() << " from process " << *previous
                << ", which ended without releasing it" << std::endl;
    }
  }
  if (fresh && std::filesystem::exists(results)) {
    std::filesystem::remove_all(results);
    std::cout << "[memcnn-train] --fresh: removed " << results.string() << std::endl;
  }
  std::filesystem::create_directories(results);
}
