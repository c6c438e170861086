#include "memcnn/train/results_lock.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace memcnn {
namespace train {
namespace {

std::optional<long> owner_named_in(int fd) {
  char text[64] = {};
  const ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  if (n <= 0) return std::nullopt;
  try {
    return std::stol(std::string(text, static_cast<size_t>(n)));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

ResultsLock::ResultsLock(const std::string& results_folder) {
  namespace fs = std::filesystem;
  const fs::path folder = fs::path(results_folder).lexically_normal();
  const fs::path name = folder.filename().empty() ? folder.parent_path() : folder;
  path_ = name.string() + ".lock";
  if (name.has_parent_path()) fs::create_directories(name.parent_path());
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error("cannot open the lock file " + path_ + ": " + std::strerror(errno));
  const auto previous = owner_named_in(fd_);
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd_);
    fd_ = -1;
    if (error != EWOULDBLOCK) throw std::runtime_error("cannot lock " + path_ + ": " + std::strerror(error));
    throw std::runtime_error("the results folder " + name.string() + " is in use by another trainer (process " +
                             (previous ? std::to_string(*previous) : std::string("unknown")) +
                             ", lock " + path_ + "); wait for it to finish or stop it, or choose another --results-dir");
  }
  if (previous && *previous != static_cast<long>(::getpid())) taken_over_from_ = previous;
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("cannot write the lock file " + path_ + ": " + std::strerror(errno));
  }
}

ResultsLock::~ResultsLock() {
  if (fd_ < 0) return;
  [[maybe_unused]] const int ignored = ::ftruncate(fd_, 0);  // no owner named: the next one finds a free lock
  ::close(fd_);         // releases the flock
}

}  // namespace train
}  // namespace memcnn
