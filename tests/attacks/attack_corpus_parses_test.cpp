// Every reproducer of the attack corpus must be readable by the project's own trace parser (the one
// check and replay use), not only by the corpus verifier script: same commands, same triggers.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "ioreq_filter/trace/trace.h"

namespace {

std::vector<std::filesystem::path> corpusFiles() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(IOREQ_FILTER_SOURCE_DIR "/tests/data/attacks")) {
    if (entry.path().extension() == ".qtest") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(AttackCorpus, HasAtLeastTwentyReproducersOverEightDeviceKinds) {
  std::set<std::string> devices;
  const auto files = corpusFiles();
  for (const auto& path : files) {
    auto trace = iof::loadTrace(path.string());
    ASSERT_TRUE(trace.has_value()) << trace.error().message();
    const auto device = trace->header("device");
    ASSERT_TRUE(device.has_value()) << path;
    devices.insert(device->substr(0, device->find(' ')));
  }
  EXPECT_GE(files.size(), 20u);
  EXPECT_GE(devices.size(), 8u);
}

TEST(AttackCorpus, EveryReproducerParsesWithMetadataAndAnIoTrigger) {
  for (const auto& path : corpusFiles()) {
    SCOPED_TRACE(path.string());
    auto trace = iof::loadTrace(path.string());
    ASSERT_TRUE(trace.has_value()) << trace.error().message();
    EXPECT_FALSE(trace->qemu_argv.empty());
    for (const char* key : {"cve", "source", "device", "description", "unfiltered-fate"}) {
      EXPECT_TRUE(trace->header(key).has_value()) << "missing # " << key << ":";
    }
    const bool blockable = !trace->header("blockable").value_or("yes").starts_with("no");
    const auto triggers = trace->triggerLines();
    if (blockable) {
      EXPECT_FALSE(triggers.empty());
    }
    for (const auto& command : trace->commands) {
      if (command.trigger) {
        EXPECT_TRUE(command.isIo()) << trace->where(command) << ": a trigger must be an I/O request";
      }
    }
  }
}

}  // namespace
