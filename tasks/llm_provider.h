// An optional second opinion for analyze_cv_task from an LLM behind an OpenAI-compatible
// chat-completions endpoint (settings: tasks.analysis.llm = {"base_url", "api_key", "model",
// "timeout"}). The model is asked for a JSON object {"score": 0..100, "summary": str,
// "strengths": [str], "suggestions": [str]}; merge_llm() folds it into the built-in analysis.
//
// Failure: ask_llm() throws LlmError with a one-line reason (unreachable, timeout, HTTP status,
// an answer that is not the JSON asked for). The task then keeps the built-in analysis and says
// why in the result; the provider never fails the task.
//
// Thread-safety: LlmConfig is immutable; each call opens its own HTTP(S) session.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace cvtasks {

using json = nlohmann::json;

struct LlmConfig {
  std::string base_url;  // e.g. https://api.openai.com/v1 (".../chat/completions" is appended)
  std::string api_key;   // sent as "Authorization: Bearer <key>"; may be empty for local servers
  std::string model;
  double timeout = 20;   // seconds, for connect and for each read

  // The config in tasks.analysis.llm, or nullopt when it is null or lacks base_url/model.
  // Throws ConfigError for a section of the wrong shape or an unknown key.
  static std::optional<LlmConfig> from_json(const json& llm);
};

class LlmError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One chat-completions call about `cv` (logical fields), with the built-in analysis as context.
json ask_llm(const LlmConfig& config, const json& cv, const json& builtin,
             const std::optional<std::string>& job_description);

// `builtin` with the LLM's answer merged in: provider "llm:<model>", score = the mean of the two,
// the built-in score kept as builtin_score, the LLM's suggestions appended (no duplicates).
json merge_llm(json builtin, const json& answer, const std::string& model);

// `builtin` with the reason the LLM was not used: provider "builtin", llm.error = reason.
json llm_fallback(json builtin, const std::string& reason);

}  // namespace cvtasks
