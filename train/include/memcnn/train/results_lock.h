#pragma once
/// @file
/// One trainer per experiment: a lock beside the experiment's results folder (FOLDER.lock), held
/// for the trainer's lifetime. The same experiment started twice by mistake stops at once, naming
/// the folder and the process that has it. The lock is an flock(2) on the file, which the kernel
/// drops when its process dies however it dies, so a lock left by a crashed or killed run is
/// simply taken over (and said so).

#include <optional>
#include <string>

namespace memcnn {
namespace train {

/// The lock of one experiment's results folder, held while this object lives.
class ResultsLock {
 public:
  /// Takes the lock RESULTS_FOLDER.lock, writing this process's id into it.
  /// Throws std::runtime_error when another process holds the lock.
  explicit ResultsLock(const std::string& results_folder);
  /// Releases the lock.
  ~ResultsLock();
  ResultsLock(const ResultsLock&) = delete;             ///< Not copyable.
  ResultsLock& operator=(const ResultsLock&) = delete;  ///< Not copyable.

  const std::string& path() const { return path_; }  ///< The lock file: the folder's path + ".lock".
  /// The process named in a lock that was taken over (it had ended without releasing it).
  std::optional<long> taken_over_from() const { return taken_over_from_; }

 private:
  std::string path_;
  int fd_ = -1;
  std::optional<long> taken_over_from_;
};

}  // namespace train
}  // namespace memcnn
