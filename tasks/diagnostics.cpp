#include "diagnostics.h"

#include <cstdint>
#include <functional>

#include <mutex>
#include <string>
#include <vector>

#include "core/base/json_numbers.h"

namespace cvtasks {
namespace {

// A task made of a name and a function; enough for these small ones.
class FunctionTask final : public Task {
 public:
  using Fn = std::function<json(TaskContext&, const json&, const json&)>;
  FunctionTask(std::string name, Fn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  std::string name() const override { return name_; }
  json run(TaskContext& ctx, const json& args, const json& kwargs) override {
    return fn_(ctx, args, kwargs);
  }

 private:
  std::string name_;
  Fn fn_;
};

[[noreturn]] void too_big(const char* fn, const json& v) {
  throw TaskError("OverflowError", std::string(fn) + "() cannot take the integer " +
                                       *integer_text(v) + ": it does not fit in 64 bits");
}

double number(const json& v, const char* fn, const char* param) {
  if (is_big_integer(v)) too_big(fn, v);
  if (!v.is_number())
    throw type_error(std::string(fn) + "() argument '" + param + "' must be a number, not " +
                     v.type_name());
  return v.get<double>();
}

// GCC's 128-bit integers (__extension__: not ISO C++), wide enough for any sum of two 64-bit ones.
__extension__ typedef __int128 Int128;
__extension__ typedef unsigned __int128 UInt128;

// A 64-bit JSON integer (nlohmann keeps non-negative ones unsigned) widened without wrapping.
Int128 wide(const json& v) {
  return v.is_number_unsigned() ? static_cast<Int128>(v.get<uint64_t>())
                                : static_cast<Int128>(v.get<int64_t>());
}

json add(const json& x, const json& y) {
  for (const json* v : {&x, &y})
    if (is_big_integer(*v)) too_big("add", *v);
  if (x.is_number_integer() && y.is_number_integer()) {
    // Python's int does not overflow: a sum past 64 bits is returned exactly, as a big integer.
    const Int128 sum = wide(x) + wide(y);
    if (sum >= INT64_MIN && sum <= INT64_MAX) return static_cast<int64_t>(sum);
    if (sum > 0 && sum <= static_cast<Int128>(UINT64_MAX)) return static_cast<uint64_t>(sum);
    UInt128 mag = sum < 0 ? -static_cast<UInt128>(sum) : static_cast<UInt128>(sum);
    std::string digits;
    do {
      digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(mag % 10)));
      mag /= 10;
    } while (mag);
    return big_integer((sum < 0 ? "-" : "") + digits);
  }
  if (x.is_number() && y.is_number()) return x.get<double>() + y.get<double>();
  if (x.is_string() && y.is_string()) return x.get<std::string>() + y.get<std::string>();
  if (x.is_array() && y.is_array()) {
    json out = x;
    for (const auto& v : y) out.push_back(v);
    return out;
  }
  throw type_error(std::string("unsupported operand type(s) for +: '") + x.type_name() +
                   "' and '" + y.type_name() + "'");
}

}  // namespace

void register_diagnostics(TaskRegistry& r) {
  const std::string p = "cvtasks.diagnostics.";
  r.add(std::make_unique<FunctionTask>(p + "noop", [](TaskContext&, const json& a, const json& k) {
    Arguments("noop", a, k, {}, 0);
    return json(nullptr);
  }));
  r.add(std::make_unique<FunctionTask>(p + "echo", [](TaskContext&, const json& a, const json& k) {
    return json{{"args", a}, {"kwargs", k}};
  }));
  r.add(std::make_unique<FunctionTask>(p + "add", [](TaskContext&, const json& a, const json& k) {
    Arguments args("add", a, k, {"x", "y"}, 2);
    return add(args.at("x"), args.at("y"));
  }));
  r.add(std::make_unique<FunctionTask>(p + "fail", [](TaskContext&, const json& a, const json& k) -> json {
    Arguments args("fail", a, k, {"message", "exc_type"}, 1);
    const json type = args.get("exc_type").value_or("ValueError");
    if (!type.is_string()) throw type_error("fail() argument 'exc_type' must be a str");
    const json& message = args.at("message");
    throw TaskError(ExceptionInfo{type.get<std::string>(), "builtins", json::array({message})});
  }));
  r.add(std::make_unique<FunctionTask>(p + "sleep", [](TaskContext& ctx, const json& a, const json& k) {
    Arguments args("sleep", a, k, {"seconds"}, 1);
    const double s = number(args.at("seconds"), "sleep", "seconds");
    ctx.sleep_for(s);
    return args.at("seconds");
  }));
  r.add(std::make_unique<FunctionTask>(p + "progress", [](TaskContext& ctx, const json& a, const json& k) {
    Arguments args("progress", a, k, {"steps", "delay"}, 1);
    const json& steps = args.at("steps");
    if (!steps.is_number_integer()) throw type_error("progress() argument 'steps' must be an int");
    const double delay = number(args.get("delay").value_or(0), "progress", "delay");
    const int64_t n = steps.get<int64_t>();
    for (int64_t i = 1; i <= n; ++i) {
      ctx.update_state("PROGRESS", {{"current", i}, {"total", n}});
      if (delay > 0) ctx.sleep_for(delay);
      ctx.check_cancelled();
    }
    return steps;
  }));
  r.add(std::make_unique<FunctionTask>(p + "leak", [](TaskContext&, const json& a, const json& k) {
    // A task that leaks: keeps `kib` KiB (touched, so resident) for the process's life. What
    // --max-memory-per-child guards against; the tests' model of it.
    Arguments args("leak", a, k, {"kib"}, 1);
    const json& kib = args.at("kib");
    if (!kib.is_number_integer() || kib.get<int64_t>() < 0 || kib.get<int64_t>() > (1 << 20))
      throw type_error("leak() argument 'kib' must be an int from 0 to 1048576");
    static std::mutex mu;
    static std::vector<std::string> kept;
    std::lock_guard<std::mutex> lock(mu);
    kept.emplace_back(static_cast<size_t>(kib.get<int64_t>()) * 1024, 'x');
    return kib;
  }));
  r.add(std::make_unique<FunctionTask>(p + "retry", [](TaskContext& ctx, const json& a, const json& k) {
    Arguments args("retry", a, k, {"times", "countdown"}, 1);
    const json& times = args.at("times");
    if (!times.is_number_integer()) throw type_error("retry() argument 'times' must be an int");
    const double countdown = number(args.get("countdown").value_or(0), "retry", "countdown");
    const int retries = ctx.request().retries;
    // No exc: past max_retries Celery raises MaxRetriesExceededError.
    if (retries < times.get<int>()) ctx.retry(countdown);
    return json(retries);
  }));
}

}  // namespace cvtasks
