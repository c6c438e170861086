// The logging hook (memcnn/log.h): the level taken from MEMCNN_LOG, the threshold, the default
// handler's lines on stderr, and replacing and restoring the handler, also while other threads log.

#include <memcnn/log.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using memcnn::LogLevel;

// Each test starts and ends with the defaults: warnings and above, printed to stderr.
class Log : public testing::Test {
 protected:
  void SetUp() override { restore_defaults(); }
  void TearDown() override { restore_defaults(); }
  static void restore_defaults() {
    memcnn::set_log_handler(nullptr);
    memcnn::set_log_level(LogLevel::Warning);
  }
};

// MEMCNN_LOG is read once, when a process first uses the log; each value is therefore tried in a
// process of its own (the threadsafe death-test style runs this program anew for each EXPECT_EXIT),
// whose exit code is the level it found.
TEST(LogDeathTest, LevelComesFromMemcnnLogAtFirstUse) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::vector<std::pair<const char*, LogLevel>> cases = {
      {"debug", LogLevel::Debug}, {"info", LogLevel::Info}, {"warning", LogLevel::Warning},
      {"verbose", LogLevel::Warning},  // an unknown name keeps the default
      {nullptr, LogLevel::Warning}};   // unset
  for (const auto& [value, expected] : cases) {
    EXPECT_EXIT(
        {
          if (value != nullptr) {
            setenv("MEMCNN_LOG", value, /*overwrite=*/1);
          } else {
            unsetenv("MEMCNN_LOG");
          }
          std::exit(static_cast<int>(memcnn::log_level()));
        },
        testing::ExitedWithCode(static_cast<int>(expected)), "")
        << "MEMCNN_LOG=" << (value != nullptr ? value : "(unset)");
  }
}

TEST_F(Log, DefaultHandlerPrintsLevelAndMessageToStderr) {
  memcnn::set_log_level(LogLevel::Debug);
  testing::internal::CaptureStderr();
  memcnn::log(LogLevel::Debug, "kept the input: it is a view");
  memcnn::log(LogLevel::Info, "rebuilt 3 inputs");
  memcnn::log(LogLevel::Warning, "drift above tolerance");
  EXPECT_EQ(testing::internal::GetCapturedStderr(),
            "[memcnn debug] kept the input: it is a view\n"
            "[memcnn info] rebuilt 3 inputs\n"
            "[memcnn warning] drift above tolerance\n");
}

TEST_F(Log, MessagesBelowTheLevelAreDropped) {
  std::vector<std::pair<LogLevel, std::string>> received;
  memcnn::set_log_handler([&](LogLevel level, const std::string& message) { received.emplace_back(level, message); });
  memcnn::log(LogLevel::Info, "dropped at the default level");
  memcnn::set_log_level(LogLevel::Info);
  EXPECT_EQ(memcnn::log_level(), LogLevel::Info);
  memcnn::log(LogLevel::Debug, "dropped below info");
  memcnn::log(LogLevel::Info, "info");
  memcnn::log(LogLevel::Warning, "warning");
  const std::vector<std::pair<LogLevel, std::string>> expected = {{LogLevel::Info, "info"},
                                                                  {LogLevel::Warning, "warning"}};
  EXPECT_EQ(received, expected);
}

TEST_F(Log, NullHandlerRestoresTheDefault) {
  int calls = 0;
  memcnn::set_log_handler([&](LogLevel, const std::string&) { ++calls; });
  testing::internal::CaptureStderr();
  memcnn::log(LogLevel::Warning, "to the handler");
  memcnn::set_log_handler(nullptr);
  memcnn::log(LogLevel::Warning, "to stderr");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "[memcnn warning] to stderr\n");
  EXPECT_EQ(calls, 1);
}

// Every message reaches exactly one handler, the one in place when it is logged, while another
// thread keeps replacing the handler.
TEST_F(Log, HandlerReplacedWhileThreadsLogLosesNoMessage) {
  constexpr int kThreads = 4, kMessages = 2000;
  std::atomic<int> first{0}, second{0};
  const memcnn::LogHandler count_first = [&](LogLevel, const std::string&) { ++first; };
  const memcnn::LogHandler count_second = [&](LogLevel, const std::string&) { ++second; };
  memcnn::set_log_handler(count_first);
  std::atomic<bool> logging{true};
  std::thread replacer([&] {
    for (int i = 0; logging.load(); ++i) memcnn::set_log_handler(i % 2 == 0 ? count_second : count_first);
  });
  std::vector<std::thread> loggers;
  for (int t = 0; t < kThreads; ++t) {
    loggers.emplace_back([] {
      for (int i = 0; i < kMessages; ++i) memcnn::log(LogLevel::Warning, "message");
    });
  }
  for (auto& logger : loggers) logger.join();
  logging = false;
  replacer.join();
  EXPECT_EQ(first + second, kThreads * kMessages);
}

}  // namespace
