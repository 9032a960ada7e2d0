#include "control_panel.h"

#include <algorithm>
#include <cctype>

#include "core/base/codecs.h"
#include "core/base/errors.h"
#include "core/broker/control.h"

namespace cvtasks {

void ControlPanel::add(const std::string& name, Handler handler) {
  handlers_[name] = std::move(handler);
}

std::optional<nlohmann::json> ControlPanel::dispatch(const std::string& name,
                                                     const json& arguments) const {
  auto it = handlers_.find(name);
  if (it == handlers_.end()) return error_reply("KeyError('" + name + "')");
  return it->second(arguments);
}

std::vector<std::string> ControlPanel::names() const {
  std::vector<std::string> out;
  for (const auto& [name, handler] : handlers_) out.push_back(name);
  return out;
}

bool control_flag(const nlohmann::json& arguments, const char* key, bool fallback) {
  if (!arguments.is_object()) return fallback;
  const auto it = arguments.find(key);
  if (it == arguments.end() || it->is_null()) return fallback;
  const nlohmann::json& v = *it;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number()) return v.get<double>() != 0;
  if (v.is_string()) {
    std::string term = v.get<std::string>();
    std::transform(term.begin(), term.end(), term.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (term == "1" || term == "true" || term == "yes" || term == "on") return true;
    if (term == "0" || term == "false" || term == "no" || term == "off") return false;
    throw ConfigError("Cannot coerce " + python_repr(v) + " to type bool");
  }
  return !v.empty();  // a list or dict: Python's truth (a big integer is never zero)
}

}  // namespace cvtasks
