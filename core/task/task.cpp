#include "task.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "core/base/json_numbers.h"
#include "core/base/utf8.h"

namespace cvtasks {

void CancelToken::cancel(CancelReason reason) {
  {
    std::lock_guard lock(mu_);
    // Abandon wins over a soft limit; never downgrade.
    if (reason_.load() != CancelReason::Abandon) reason_ = reason;
  }
  cv_.notify_all();
}

void CancelToken::check() {
  switch (reason_.load()) {
    case CancelReason::None:
      return;
    case CancelReason::SoftTimeLimit:
      if (soft_raised_) return;
      soft_raised_ = true;
      throw soft_time_limit_exceeded();
    case CancelReason::Abandon:
      throw TaskAbandoned();
  }
}

void CancelToken::sleep_for(double seconds) {
  check();
  const auto until = std::chrono::steady_clock::now() +
                     span<std::chrono::steady_clock::duration>(seconds);
  {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, until, [&] {
      const auto r = reason_.load();
      return r == CancelReason::Abandon || (r == CancelReason::SoftTimeLimit && !soft_raised_);
    });
  }
  check();
}

TaskContext::TaskContext(const TaskMessage& request, const Settings& settings,
                         CancelToken& cancel, StateWriter write_state, ProcessHook process_hook)
    : request_(request),
      settings_(settings),
      cancel_(cancel),
      write_state_(std::move(write_state)),
      process_hook_(std::move(process_hook)) {}

void TaskContext::retry(std::optional<double> countdown, std::optional<ExceptionInfo> exc) {
  // task_annotations' default_retry_delay over the setting.
  const double fallback = annotation_for(settings_.celery, request_.task)
                              .default_retry_delay.value_or(settings_.celery.task_default_retry_delay);
  throw RetryRequested(countdown.value_or(fallback),
                       std::move(exc));
}

Arguments::Arguments(std::string function, const json& args, const json& kwargs,
                     std::initializer_list<const char*> names, size_t required) {
  const std::vector<std::string> params(names.begin(), names.end());
  if (!args.is_array() || !kwargs.is_object()) throw type_error(function + "() bad arguments");
  if (args.size() > params.size()) {
    // Python: "takes 2 positional arguments" or, with defaults, "takes from 1 to 2 ...".
    const std::string count = required == params.size()
                                  ? std::to_string(params.size())
                                  : "from " + std::to_string(required) + " to " +
                                        std::to_string(params.size());
    throw type_error(function + "() takes " + count + " positional argument" +
                     (params.size() == 1 && required == params.size() ? "" : "s") + " but " +
                     std::to_string(args.size()) + (args.size() == 1 ? " was" : " were") +
                     " given");
  }
  for (size_t i = 0; i < args.size(); ++i) values_[params[i]] = args[i];
  for (const auto& [k, v] : kwargs.items()) {
    if (std::find(params.begin(), params.end(), k) == params.end())
      throw type_error(function + "() got an unexpected keyword argument '" + k + "'");
    if (values_.count(k))
      throw type_error(function + "() got multiple values for argument '" + k + "'");
    values_[k] = v;
  }
  std::vector<std::string> missing;
  for (size_t i = 0; i < required; ++i)
    if (!values_.count(params[i])) missing.push_back("'" + params[i] + "'");
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size(); ++i) {
      if (i) list += (i + 1 == missing.size()) ? (missing.size() > 2 ? ", and " : " and ") : ", ";
      list += missing[i];
    }
    throw type_error(function + "() missing " + std::to_string(missing.size()) +
                     " required positional argument" + (missing.size() == 1 ? "" : "s") +
                     ": " + list);
  }
}

std::optional<json> Arguments::get(const char* name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

const json& Arguments::at(const char* name) const { return values_.at(name); }

namespace {

[[noreturn]] void does_not_fit(const std::string& name, const std::string& value) {
  throw TaskError("OverflowError", name + " " + value + " does not fit in a 64-bit integer");
}

}  // namespace

int64_t integer_argument(const json& value, const std::string& name, bool accept_str) {
  if (value.is_number_unsigned()) {
    // nlohmann keeps a non-negative integer as unsigned: get<int64_t>() would wrap 2**63 to
    // -2**63 and 2**64-1 to -1.
    const auto n = value.get<uint64_t>();
    if (n > static_cast<uint64_t>(INT64_MAX)) does_not_fit(name, std::to_string(n));
    return static_cast<int64_t>(n);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  if (const auto digits = big_integer_digits(value)) does_not_fit(name, *digits);
  if (value.is_number_float()) {
    // An integer literal past the unsigned 64-bit range is parsed as a float: out of range,
    // not of the wrong type, when it is integral (-2**63 itself parses as an integer, so a float
    // of that value was a literal below it, rounded).
    const double d = value.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && (d >= 0x1p63 || d <= -0x1p63))
      does_not_fit(name, std::to_string(d).substr(0, std::to_string(d).find('.')));
  }
  if (accept_str && value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    const char* begin = s.c_str();
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(begin, &end, 10);
    const bool digits = end != begin && std::isdigit(static_cast<unsigned char>(end[-1]));
    while (end < begin + s.size() && std::isspace(static_cast<unsigned char>(*end))) ++end;
    if (digits && end == begin + s.size()) {  // all of it (an embedded NUL is not)
      if (errno == ERANGE) does_not_fit(name, s);
      return n;
    }
    throw TaskError("ValueError", name + " must be an integer, got '" + valid_utf8(s) + "'");
  }
  throw type_error(name + " must be an integer, not " + value.type_name());
}

}  // namespace cvtasks
