// The built-in CV analyzer behind analyze_cv_task: no network, deterministic, fast.
//
// Input is a CV as JSON with the logical field names of docs/settings.md (full_name, email,
// phone, location, headline, summary, skills [strings], experience/education/languages [objects]);
// any field may be missing or null. Output is the analysis the task stores and returns:
//   {"score": 0..100, "breakdown": {<part>: {"score", "max", ...}}, "skills": {...},
//    "readability": {...}, "job_match": {...} | null, "suggestions": [strings]}
// Scores: completeness 30, content 25, readability 15, skills 30 (15 + job match 15 when a job
// description is given). Thread-safety: a SkillTaxonomy is immutable once loaded and may be shared.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cvtasks {

using json = nlohmann::json;

// The skills the analyzer knows: a data file, {"categories": {"<category>": [<skill>...]}} where a
// skill is a name or {"name", "aliases": [...], "exact_only": bool}. exact_only skills ("C", "Go",
// "R") are too common as words to find in prose: they count only when listed as a skill.
class SkillTaxonomy {
 public:
  struct Skill {
    std::string name;
    std::string category;
    std::vector<std::string> terms;  // lower-cased name and aliases
    bool exact_only = false;
  };

  // Throws ConfigError naming the file when it is unreadable or malformed.
  static SkillTaxonomy load(const std::string& path);
  // Skills keep the file's order (categories too), which is the order find() reports them in.
  static SkillTaxonomy from_json(const nlohmann::ordered_json& doc);

  const std::vector<Skill>& skills() const { return skills_; }

  // The skills named by the listed skills (exact, case-insensitive) or found in the free text
  // (whole words, case-insensitive), in taxonomy order, each once.
  std::vector<const Skill*> find(const std::vector<std::string>& listed,
                                 const std::string& text) const;

 private:
  std::vector<Skill> skills_;
};

// Analyzes one CV. Never throws for odd content: wrong types count as missing.
json analyze_cv(const json& cv, const std::optional<std::string>& job_description,
                const SkillTaxonomy& taxonomy);

}  // namespace cvtasks
