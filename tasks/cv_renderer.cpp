#include "cv_renderer.h"

#include <kainjow/mustache.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/base/errors.h"
#include "core/base/utf8.h"
#include "core/protocol/task_error.h"

namespace cvtasks {
namespace {

namespace fs = std::filesystem;
using kainjow::mustache::data;
using kainjow::mustache::mustache;

// JSON to Mustache data. Empty strings, nulls and empty lists are left out, so that a section
// {{#phone}}...{{/phone}} disappears when the CV has no phone.
std::optional<data> to_data(const json& v) {
  switch (v.type()) {
    case json::value_t::object: {
      data d{data::type::object};
      for (const auto& [k, x] : v.items())
        if (auto c = to_data(x)) d.set(k, *c);
      return d;
    }
    case json::value_t::array: {
      data list{data::type::list};
      for (const auto& x : v)
        if (auto c = to_data(x)) list.push_back(*c);
      if (list.list_value().empty()) return std::nullopt;
      return list;
    }
    case json::value_t::string:
      if (v.get_ref<const std::string&>().empty()) return std::nullopt;
      return data(v.get<std::string>());
    case json::value_t::boolean:
      return v.get<bool>() ? data(data::type::bool_true) : data(data::type::bool_false);
    case json::value_t::null:
    case json::value_t::discarded:
      return std::nullopt;
    default:
      return data(dump_json(v));
  }
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  return true;
}

std::string exe_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

}  // namespace

std::string shipped_templates_dir() {
  const std::string bin = exe_dir();
  if (!bin.empty()) {
    const fs::path installed = fs::path(bin) / ".." / "share" / "cvtasks" / "templates";
    std::error_code ec;
    if (fs::is_directory(installed, ec)) return fs::canonical(installed, ec).string();
  }
  return CVTASKS_SOURCE_TEMPLATES_DIR;
}

CvRenderer::CvRenderer(std::string project_dir, std::string default_template)
    : default_template_(std::move(default_template)) {
  if (!project_dir.empty()) dirs_.push_back(std::move(project_dir));
  dirs_.push_back(shipped_templates_dir());
  if (!valid_name(default_template_))
    throw ConfigError("tasks.pdf.default_template '" + default_template_ + "' is not a template name");
}

std::vector<std::string> CvRenderer::available() const {
  std::set<std::string> names;
  for (const auto& dir : dirs_) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (fs::is_regular_file(entry.path() / "cv.html")) names.insert(entry.path().filename());
  }
  return {names.begin(), names.end()};
}

RenderedHtml CvRenderer::render(const json& cv, const std::optional<std::string>& name) const {
  const std::string wanted = name.value_or(default_template_);
  if (!valid_name(wanted))
    throw TaskError("ValueError", "invalid template name '" + wanted + "'");
  for (const auto& dir : dirs_) {
    const fs::path folder = fs::path(dir) / wanted;
    std::ifstream in(folder / "cv.html", std::ios::binary);
    if (!in) continue;
    std::stringstream source;
    source << in.rdbuf();
    mustache tmpl(source.str());
    if (!tmpl.is_valid())
      throw TaskError("TemplateError",
                      "template " + wanted + " (" + (folder / "cv.html").string() +
                          "): " + tmpl.error_message(),
                      "cvtasks.errors");
    std::error_code ec;
    const std::string abs = fs::canonical(folder, ec).string();
    json context = cv;
    for (const auto& [key, value] : cv.items())  // {{#has_skills}}: a heading only over a list
      if (value.is_array() && !value.empty()) context["has_" + key] = true;
    context["assets"] = "file://" + abs + "/";
    context["template"] = wanted;
    std::string html = tmpl.render(*to_data(context));
    if (!tmpl.is_valid())
      throw TaskError("TemplateError", "template " + wanted + ": " + tmpl.error_message(),
                      "cvtasks.errors");
    return {std::move(html), abs, wanted};
  }
  std::string known;
  for (const auto& n : available()) known += (known.empty() ? "" : ", ") + n;
  throw TaskError("ValueError", "unknown template '" + wanted + "' (available: " + known + ")");
}

}  // namespace cvtasks
