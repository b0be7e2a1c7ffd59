// Deterministic driver for the fuzz entry point (fuzz_module_loader.cpp) without libFuzzer: built with
// GCC under ASan+UBSan, it replays corpus files and seeded mutations of module images, each in its own
// child process bounded by a CPU-time limit, so a crash, a sanitizer report or a hang fails the run and names
// the input (mutated inputs are saved for the regression corpus).
//
//   analysis_fuzz_replay [--expect FILE.tsv]... [--mutate FILE]... [--mutations N] [--seed S]
//                        [--timeout SECONDS] [--jobs N] [--save-failures DIR] [INPUT|DIR]...
//
// --expect: lines `FILE<TAB>ok`, `FILE<TAB>any` or `FILE<TAB>error<TAB>SUBSTRING` for files in the same
// directory; each must be among the inputs and behave as stated (refused with a message containing
// SUBSTRING, or loaded and analysed).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace iof::analysis::fuzz {
std::string analyseInput(const std::uint8_t* data, std::size_t size, const std::string& path);
}

namespace {

namespace fs = std::filesystem;

struct Input {
  std::string name;  // file path, or "mutation N of FILE"
  std::vector<std::uint8_t> bytes;
  std::optional<std::string> expect;  // "ok", "any", or an error substring
};

std::optional<std::vector<std::uint8_t>> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// splitmix64: a fixed, portable sequence for a given seed.
struct Rng {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return n ? next() % n : 0; }
};

std::uint64_t readLe(const std::vector<std::uint8_t>& b, std::size_t off, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | (off + std::size_t(i) < b.size() ? b[off + std::size_t(i)] : 0);
  return v;
}

// Byte ranges of the structures the loader parses (ELF header, section header table, symbol tables,
// relocations, string tables), so that most mutations land where parsing decisions are made rather
// than in the middle of the code.
std::vector<std::pair<std::size_t, std::size_t>> structureRanges(const std::vector<std::uint8_t>& b) {
  std::vector<std::pair<std::size_t, std::size_t>> r;
  if (b.size() < 64) return r;
  r.emplace_back(0, 64);
  const std::uint64_t shoff = readLe(b, 0x28, 8), shnum = readLe(b, 0x3c, 2);
  if (shoff >= b.size() || shnum == 0 || shnum * 64 > b.size() - shoff) return r;
  r.emplace_back(shoff, shnum * 64);
  for (std::uint64_t i = 0; i < shnum; ++i) {
    const std::size_t h = shoff + i * 64;
    const std::uint64_t type = readLe(b, h + 4, 4), off = readLe(b, h + 24, 8), size = readLe(b, h + 32, 8);
    if ((type == 2 || type == 3 || type == 4) && off < b.size() && size > 0 && size <= b.size() - off) r.emplace_back(off, size);
  }
  return r;
}

std::vector<std::uint8_t> mutate(std::vector<std::uint8_t> b, Rng& rng) {
  static constexpr std::uint64_t kInteresting[] = {0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff,
                                                   0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull};
  const auto ranges = structureRanges(b);
  const int edits = 1 + int(rng.below(4));
  for (int e = 0; e < edits && !b.empty(); ++e) {
    std::size_t at = 0, span = b.size();
    if (!ranges.empty() && rng.below(8) != 0) {
      const auto& [off, len] = ranges[rng.below(ranges.size())];
      at = off, span = len;
    }
    const std::size_t pos = at + rng.below(span);
    switch (rng.below(6)) {
      case 0: b[pos] ^= std::uint8_t(1u << rng.below(8)); break;
      case 1: b[pos] = std::uint8_t(rng.next()); break;
      case 2:
      case 3: {  // a field set to a boundary value (sizes, offsets, counts, indices)
        const int width = 1 << rng.below(4);
        std::uint64_t v = kInteresting[rng.below(std::size(kInteresting))];
        if (rng.below(4) == 0) v = b.size() + rng.below(64) - 32;
        for (int i = 0; i < width && pos + std::size_t(i) < b.size(); ++i) b[pos + std::size_t(i)] = std::uint8_t(v >> (8 * i));
        break;
      }
      case 4:
        if (rng.below(4) == 0) b.resize(pos);  // truncation
        break;
      case 5: {  // a copied chunk (one structure's bytes over another's)
        const std::size_t from = rng.below(b.size()), len = std::min<std::size_t>(1 + rng.below(64), b.size() - std::max(from, pos));
        std::memmove(b.data() + pos, b.data() + from, len);
        break;
      }
    }
  }
  return b;
}

struct Outcome {
  bool ok = false;
  std::string detail;   // why it failed
  std::string message;  // the loader's error ("" = analysed)
};

struct Running {
  pid_t pid;
  int fd;
  std::size_t input;
  std::string output;
};

[[noreturn]] void runChild(const Input& in, int fd, unsigned timeout) {
  // A hang is measured in CPU time, so a loaded machine does not turn a slow input into a "hang":
  // SIGXCPU (default action: end the child) at TIMEOUT seconds of CPU. A child that stops using CPU
  // without finishing is caught by the wall-clock backstop (SIGALRM) at ten times that.
  const rlimit cpu{rlim_t(timeout), rlim_t(timeout) + 1};
  setrlimit(RLIMIT_CPU, &cpu);
  alarm(timeout * 10);
  // Kernel images (".vmlinux"/".vmlinuz" inputs and their mutations) take the kernel loader's path.
  const bool kernel = in.name.find(".vmlinu") != std::string::npos;
  const std::string m = iof::analysis::fuzz::analyseInput(in.bytes.data(), in.bytes.size(), kernel ? "input.vmlinuz" : "input.ko");
  const std::string line = (m.empty() ? "OK" : "ERR " + m) + "\n";
  for (std::size_t done = 0; done < line.size();) {
    const ssize_t n = write(fd, line.data() + done, line.size() - done);
    if (n <= 0) break;
    done += std::size_t(n);
  }
  _exit(0);
}

Outcome judge(const Input& in, int status, const std::string& output, unsigned timeout) {
  Outcome o;
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    o.detail = sig == SIGXCPU  ? "hang: no result within " + std::to_string(timeout) + " s of CPU time"
               : sig == SIGALRM ? "hang: no result within " + std::to_string(timeout * 10) + " s wall (not using CPU)"
                                : std::string("crash: signal ") + strsignal(sig);
    return o;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    o.detail = "crash: exit status " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + " (sanitizer report above)";
    return o;
  }
  if (output.starts_with("OK")) {
    o.message.clear();
  } else if (output.starts_with("ERR ")) {
    o.message = output.substr(4, output.find('\n') - 4);
  } else {
    o.detail = "the child exited without a result";
    return o;
  }
  if (in.expect && *in.expect != "any") {
    if (*in.expect == "ok" && !o.message.empty()) {
      o.detail = "expected to load and analyse, refused: " + o.message;
      return o;
    }
    if (*in.expect != "ok" && (o.message.empty() || o.message.find(*in.expect) == std::string::npos)) {
      o.detail = "expected an error containing '" + *in.expect + "', got " + (o.message.empty() ? "none (analysed)" : "'" + o.message + "'");
      return o;
    }
  }
  o.ok = true;
  return o;
}

int usage() {
  std::fprintf(stderr,
               "usage: analysis_fuzz_replay [--expect FILE.tsv]... [--mutate FILE]... [--mutations N] [--seed S] [--timeout S] [--jobs N]\n"
               "                            [--save-failures DIR] [INPUT|DIR]...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> paths, expect_files, mutate_files;
  std::size_t mutations = 0;
  std::uint64_t seed = 1;
  unsigned timeout = 20, jobs = 1;
  std::string save_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--expect") expect_files.push_back(value());
    else if (a == "--mutate") mutate_files.push_back(value());
    else if (a == "--mutations") mutations = std::strtoull(value().c_str(), nullptr, 10);
    else if (a == "--seed") seed = std::strtoull(value().c_str(), nullptr, 0);
    else if (a == "--timeout") timeout = unsigned(std::strtoul(value().c_str(), nullptr, 10));
    else if (a == "--jobs") jobs = std::max(1u, unsigned(std::strtoul(value().c_str(), nullptr, 10)));
    else if (a == "--save-failures") save_dir = value();
    else if (a.starts_with("--")) return usage();
    else paths.push_back(a);
  }
  if (timeout == 0) return usage();

  std::vector<Input> inputs;
  std::map<std::string, std::size_t> by_path;
  for (const auto& p : paths) {
    std::vector<std::string> files;
    if (fs::is_directory(p)) {
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() && (e.path().extension() == ".ko" || e.path().extension() == ".vmlinux" || e.path().extension() == ".vmlinuz"))
          files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(p);
    }
    for (const auto& f : files) {
      auto bytes = readFile(f);
      if (!bytes) {
        std::fprintf(stderr, "analysis_fuzz_replay: %s: cannot read: %s\n", f.c_str(), std::strerror(errno));
        return 2;
      }
      by_path[fs::weakly_canonical(f).string()] = inputs.size();
      inputs.push_back(Input{f, std::move(*bytes), std::nullopt});
    }
  }
  for (const auto& e : expect_files) {
    std::ifstream in(e);
    if (!in) {
      std::fprintf(stderr, "analysis_fuzz_replay: %s: cannot read: %s\n", e.c_str(), std::strerror(errno));
      return 2;
    }
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (line.empty() || line[0] == '#') continue;
      const auto t1 = line.find('\t');
      const std::string file = line.substr(0, t1), rest = t1 == std::string::npos ? "" : line.substr(t1 + 1);
      std::string want;
      if (rest == "ok" || rest == "any") want = rest;
      else if (rest.starts_with("error\t") && rest.size() > 6) want = rest.substr(6);
      else {
        std::fprintf(stderr, "analysis_fuzz_replay: %s:%d: expected FILE<TAB>ok|any|error<TAB>SUBSTRING, got '%s'\n", e.c_str(), n, line.c_str());
        return 2;
      }
      const auto it = by_path.find(fs::weakly_canonical(fs::path(e).parent_path() / file).string());
      if (it == by_path.end()) {
        std::fprintf(stderr, "analysis_fuzz_replay: %s:%d: %s is not among the inputs\n", e.c_str(), n, file.c_str());
        return 2;
      }
      inputs[it->second].expect = want;
    }
  }
  for (const auto& f : mutate_files) {
    auto bytes = readFile(f);
    if (!bytes) {
      std::fprintf(stderr, "analysis_fuzz_replay: %s: cannot read: %s\n", f.c_str(), std::strerror(errno));
      return 2;
    }
    // One stream per file: adding a file does not change the mutations of the others.
    Rng rng{seed ^ std::hash<std::string>{}(fs::path(f).filename().string())};
    for (std::size_t m = 0; m < mutations; ++m)
      inputs.push_back(Input{"mutation " + std::to_string(m) + " of " + f + " (seed " + std::to_string(seed) + ")", mutate(*bytes, rng), std::nullopt});
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "analysis_fuzz_replay: no inputs\n");
    return 2;
  }

  std::size_t next = 0, failed = 0, refused = 0, analysed = 0;
  std::vector<Running> running;
  auto start = [&](std::size_t i) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return false;
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
      close(p[0]);
      runChild(inputs[i], p[1], timeout);
    }
    close(p[1]);
    running.push_back(Running{pid, p[0], i, {}});
    return true;
  };
  while (next < inputs.size() || !running.empty()) {
    while (next < inputs.size() && running.size() < jobs) {
      if (!start(next)) {
        std::fprintf(stderr, "analysis_fuzz_replay: cannot start a child: %s\n", std::strerror(errno));
        return 2;
      }
      ++next;
    }
    std::vector<pollfd> fds;
    for (const auto& r : running) fds.push_back(pollfd{r.fd, POLLIN, 0});
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return 2;
    for (std::size_t k = fds.size(); k-- > 0;) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Running& r = running[k];
      char buf[4096];
      const ssize_t n = read(r.fd, buf, sizeof buf);
      if (n > 0) {
        r.output.append(buf, std::size_t(n));
        continue;
      }
      close(r.fd);
      int status = 0;
      waitpid(r.pid, &status, 0);
      const Input& in = inputs[r.input];
      const Outcome o = judge(in, status, r.output, timeout);
      if (!o.ok) {
        ++failed;
        std::fprintf(stderr, "FAIL %s: %s\n", in.name.c_str(), o.detail.c_str());
        if (!save_dir.empty() && in.name.starts_with("mutation ")) {
          fs::create_directories(save_dir);
          const bool kernel = in.name.find(".vmlinu") != std::string::npos;
          const std::string out = save_dir + "/failure-" + std::to_string(r.input) + (kernel ? ".vmlinux" : ".ko");
          std::ofstream(out, std::ios::binary).write(reinterpret_cast<const char*>(in.bytes.data()), std::streamsize(in.bytes.size()));
          std::fprintf(stderr, "     saved as %s\n", out.c_str());
        }
      } else if (o.message.empty()) {
        ++analysed;
      } else {
        ++refused;
      }
      running.erase(running.begin() + std::ptrdiff_t(k));
    }
  }
  std::fprintf(stderr, "%zu inputs: %zu analysed, %zu refused with an error, %zu failed\n", inputs.size(), analysed, refused, failed);
  return failed ? 1 : 0;
}
