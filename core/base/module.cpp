#include "module.h"

#include <dlfcn.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <vector>

#include "errors.h"

namespace cvtasks {
namespace {

std::vector<std::filesystem::path> module_dirs() {
  std::vector<std::filesystem::path> dirs;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    dirs.push_back(exe.parent_path());
    dirs.push_back(exe.parent_path().parent_path() / "lib");
  }
  // A binary copied out of the build tree still finds the modules it was built with.
  dirs.emplace_back(CVTASKS_MODULE_DIR);
  return dirs;
}

}  // namespace

void* module_symbol(const std::string& name, const char* symbol) {
  static std::mutex mu;
  static std::map<std::string, void*> loaded;
  std::lock_guard lock(mu);
  void*& handle = loaded[name];
  std::string tried;
  if (!handle) {
    for (const auto& dir : module_dirs()) {
      const auto path = dir / (name + ".so");
      if (!std::filesystem::exists(path)) {
        tried += (tried.empty() ? "" : ", ") + path.string();
        continue;
      }
      // RTLD_LOCAL: a module's symbols serve only the caller that asked for them.
      handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!handle) throw ConfigError("cannot load module " + path.string() + ": " + ::dlerror());
      break;
    }
    if (!handle) throw ConfigError("module " + name + ".so is missing (looked for " + tried + ")");
  }
  void* address = ::dlsym(handle, symbol);
  if (!address)
    throw ConfigError("module " + name + ".so has no " + symbol + " (built from another version?)");
  return address;
}

}  // namespace cvtasks
