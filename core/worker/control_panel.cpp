#include "control_panel.h"

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

}  // namespace cvtasks
