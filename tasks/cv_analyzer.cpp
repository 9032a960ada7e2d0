#include "cv_analyzer.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "core/base/errors.h"

namespace cvtasks {

namespace {

std::string lower_ascii(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

bool is_word_byte(unsigned char c) { return std::isalnum(c) || c >= 0x80; }

// `term` occurs in `text` (both lower-cased) with no letter or digit glued to either side, so
// "java" is not found in "javascript" while "c++" and "node.js" still match.
bool contains_word(const std::string& text, const std::string& term) {
  for (size_t at = text.find(term); at != std::string::npos; at = text.find(term, at + 1)) {
    const bool left = at == 0 || !is_word_byte(static_cast<unsigned char>(text[at - 1]));
    const size_t end = at + term.size();
    const bool right = end >= text.size() || !is_word_byte(static_cast<unsigned char>(text[end]));
    if (left && right) return true;
  }
  return false;
}

std::string text_of(const json& v) { return v.is_string() ? v.get<std::string>() : std::string(); }

// The entries of a list field that have the right type (strings for skills, objects for the
// others); anything else in the list is ignored, as is a list field that is not a list.
json list_of(const json& cv, const char* key) {
  json out = json::array();
  auto it = cv.find(key);
  if (it == cv.end() || !it->is_array()) return out;
  const bool strings = std::string_view(key) == "skills";
  for (const auto& e : *it)
    if (strings ? e.is_string() : e.is_object()) out.push_back(e);
  return out;
}

std::string field(const json& cv, const char* key) {
  auto it = cv.find(key);
  return it == cv.end() ? std::string() : text_of(*it);
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

// Counts of a text that work across scripts. CJK has no spaces between words: each CJK
// character counts as half a word, which matches typical Chinese/Japanese word lengths.
struct TextStats {
  double words = 0;
  int sentences = 0;
  int syllables = 0;     // Latin words only
  int latin_words = 0;
  int long_words = 0;    // Latin words of 3+ syllables
  int other_letters = 0; // code points of non-Latin scripts
};

int syllables_of(const std::string& word) {
  int count = 0;
  bool in_vowel = false;
  for (char c : word) {
    const bool vowel = std::string_view("aeiouy").find(c) != std::string_view::npos;
    if (vowel && !in_vowel) ++count;
    in_vowel = vowel;
  }
  if (word.size() > 2 && word.back() == 'e' && count > 1) --count;  // silent e
  return std::max(count, 1);
}

TextStats stats_of(const std::string& raw) {
  TextStats st;
  const std::string text = lower_ascii(raw);
  std::string word;
  bool in_sentence = false;
  auto end_word = [&] {
    if (word.empty()) return;
    st.words += 1;
    in_sentence = true;
    if (std::all_of(word.begin(), word.end(), [](unsigned char c) { return std::isalpha(c); })) {
      ++st.latin_words;
      const int s = syllables_of(word);
      st.syllables += s;
      if (s >= 3) ++st.long_words;
    }
    word.clear();
  };
  auto end_sentence = [&] {
    end_word();
    if (in_sentence) ++st.sentences;
    in_sentence = false;
  };
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      if (c == '.' || c == '!' || c == '?' || c == '\n') {
        end_sentence();
      } else if (std::isalnum(c) || c == '\'' || c == '+' || c == '#') {
        word += static_cast<char>(c);
      } else {
        end_word();
      }
      ++i;
      continue;
    }
    // Decode one UTF-8 code point.
    const int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    uint32_t cp = len == 1 ? c : c & (0xFF >> (len + 1));
    for (int k = 1; k < len && i + k < text.size(); ++k)
      cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    i += len;
    if (cp == 0x3002 || cp == 0xFF01 || cp == 0xFF1F || cp == 0x061F || cp == 0x06D4) {
      end_sentence();  // 。！？ and Arabic ؟ ۔
    } else if ((cp >= 0x3040 && cp <= 0x30FF) || (cp >= 0x3400 && cp <= 0x9FFF) ||
               (cp >= 0xAC00 && cp <= 0xD7AF)) {
      end_word();
      st.words += 0.5;
      ++st.other_letters;
      in_sentence = true;
    } else if (cp == 0x060C || cp == 0x3001 || cp == 0xFF0C || (cp >= 0x2000 && cp <= 0x206F)) {
      end_word();  // Arabic comma, ideographic comma, fullwidth comma, general punctuation
    } else {
      ++st.other_letters;
      word += text.substr(i - len, len);
    }
  }
  end_sentence();
  return st;
}

json part(double score, int max) {
  return json{{"score", std::round(score * 10) / 10}, {"max", max}};
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

}  // namespace

SkillTaxonomy SkillTaxonomy::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read the skills taxonomy " + path);
  try {
    return from_json(nlohmann::ordered_json::parse(in));
  } catch (const json::exception& e) {
    throw ConfigError("skills taxonomy " + path + ": " + e.what());
  }
}

SkillTaxonomy SkillTaxonomy::from_json(const nlohmann::ordered_json& doc) {
  SkillTaxonomy t;
  for (const auto& [category, skills] : doc.at("categories").items()) {
    for (const auto& s : skills) {
      Skill skill;
      skill.category = category;
      if (s.is_string()) {
        skill.name = s.get<std::string>();
      } else {
        skill.name = s.at("name").get<std::string>();
        skill.exact_only = s.value("exact_only", false);
        for (const auto& alias : s.value("aliases", nlohmann::ordered_json::array()))
          skill.terms.push_back(lower_ascii(alias.get<std::string>()));
      }
      skill.terms.insert(skill.terms.begin(), lower_ascii(skill.name));
      t.skills_.push_back(std::move(skill));
    }
  }
  return t;
}

std::vector<const SkillTaxonomy::Skill*> SkillTaxonomy::find(
    const std::vector<std::string>& listed, const std::string& text) const {
  std::set<std::string> listed_lower;
  for (const auto& l : listed) listed_lower.insert(lower_ascii(l));
  const std::string haystack = lower_ascii(text);
  std::vector<const Skill*> out;
  for (const Skill& s : skills_) {
    const bool hit = std::any_of(s.terms.begin(), s.terms.end(), [&](const std::string& term) {
      if (listed_lower.count(term)) return true;
      if (s.exact_only) return false;
      // A listed entry such as "Python 3" or "AWS (EC2, S3)" names the skill too.
      for (const auto& l : listed_lower)
        if (contains_word(l, term)) return true;
      return contains_word(haystack, term);
    });
    if (hit) out.push_back(&s);
  }
  return out;
}

json analyze_cv(const json& cv, const std::optional<std::string>& job_description,
                const SkillTaxonomy& taxonomy) {
  std::vector<std::string> suggestions;
  const bool with_job = job_description && !blank(*job_description);

  // --- completeness (30)
  struct Weighted { const char* field; int points; bool list; const char* advice; };
  static const Weighted kFields[] = {
      {"full_name", 3, false, "Add your full name."},
      {"email", 3, false, "Add an email address recruiters can reply to."},
      {"phone", 2, false, "Add a phone number."},
      {"location", 2, false,
       "Add your location (city and country) so recruiters know where you can work."},
      {"headline", 3, false, "Add a headline: your role and speciality in a few words."},
      {"summary", 5, false,
       "Write a summary of 40-120 words: who you are, what you do best, what you want."},
      {"skills", 4, true, "List your skills."},
      {"experience", 5, true, "Add your work experience, most recent first."},
      {"education", 2, true, "Add your education."},
      {"languages", 1, true, "List the languages you speak and your level."},
  };
  double completeness = 0;
  json missing = json::array();
  for (const auto& f : kFields) {
    const bool present = f.list ? !list_of(cv, f.field).empty() : !blank(field(cv, f.field));
    if (present) {
      completeness += f.points;
    } else {
      missing.push_back(f.field);
      suggestions.emplace_back(f.advice);
    }
  }

  // --- content (25)
  const std::string summary = field(cv, "summary");
  const TextStats summary_stats = stats_of(summary);
  const double summary_words = summary_stats.words;
  double content = 0;
  if (summary_words >= 40 && summary_words <= 120) content += 8;
  else if (summary_words >= 20 && summary_words <= 200) content += 5;
  else if (summary_words > 0) content += 2;
  if (summary_words > 0 && summary_words < 40)
    suggestions.push_back("Your summary has " + std::to_string(static_cast<int>(summary_words)) +
                          " words; 40-120 words gives recruiters enough to go on.");
  if (summary_words > 120)
    suggestions.push_back("Your summary has " + std::to_string(static_cast<int>(summary_words)) +
                          " words; cut it to 120 or fewer.");

  const json experience = list_of(cv, "experience");
  std::string prose = summary;
  int described = 0, dated = 0;
  std::vector<std::string> undescribed;
  for (const auto& e : experience) {
    const std::string description = text_of(e.value("description", json()));
    prose += "\n" + description;
    if (stats_of(description).words >= 10) ++described;
    else undescribed.push_back(text_of(e.value("title", json("a role"))));
    if (!text_of(e.value("start", json())).empty()) ++dated;
  }
  const double n_exp = static_cast<double>(experience.size());
  content += n_exp >= 2 ? 6 : n_exp == 1 ? 3 : 0;
  if (n_exp > 0) {
    content += 6 * described / n_exp + 5 * dated / n_exp;
    if (!undescribed.empty())
      suggestions.push_back("Describe what you achieved in " + join(undescribed) +
                            " (at least a sentence or two, with numbers where you can).");
    if (dated < n_exp) suggestions.push_back("Give start and end dates for every role.");
  }

  // --- readability (15)
  const TextStats prose_stats = stats_of(prose);
  json readability = {{"words", std::round(prose_stats.words)},
                      {"sentences", prose_stats.sentences}};
  double readable = 0;
  if (prose_stats.words > 0) {
    const double per_sentence = prose_stats.words / std::max(prose_stats.sentences, 1);
    readability["avg_sentence_words"] = std::round(per_sentence * 10) / 10;
    const bool latin = prose_stats.latin_words >= prose_stats.other_letters;
    readability["script"] = latin ? "latin" : "other";
    if (latin && prose_stats.latin_words > 0) {
      // Flesch reading ease, defined for English; a guide for other Latin-script languages.
      const double ease = 206.835 - 1.015 * per_sentence -
                          84.6 * prose_stats.syllables / prose_stats.latin_words;
      readability["flesch_reading_ease"] = std::round(ease * 10) / 10;
      readable = ease >= 60 ? 15 : ease >= 50 ? 13 : ease >= 40 ? 11 : ease >= 30 ? 8 : 5;
      if (ease < 40)
        suggestions.emplace_back("Your text is hard to read: prefer short sentences and plain words.");
    } else {
      readability["flesch_reading_ease"] = nullptr;  // not defined for this script
      readable = 12;
    }
    if (per_sentence > 25) {
      readable = std::max(0.0, readable - 3);
      suggestions.push_back("Sentences average " + std::to_string(static_cast<int>(per_sentence)) +
                            " words; aim for under 20.");
    }
  } else {
    readability["flesch_reading_ease"] = nullptr;
  }

  // --- skills (30, or 15 + job match 15)
  std::vector<std::string> listed;
  for (const auto& s : list_of(cv, "skills")) listed.push_back(s.get<std::string>());
  std::string all_text = prose + "\n" + field(cv, "headline");
  for (const auto& e : experience) all_text += "\n" + text_of(e.value("title", json()));
  const auto found = taxonomy.find(listed, all_text);
  json found_json = json::array();
  json by_category = json::object();
  for (const auto* s : found) {
    found_json.push_back({{"name", s->name}, {"category", s->category}});
    by_category[s->category].push_back(s->name);
  }
  const int skills_max = with_job ? 15 : 30;
  const double skills_score = skills_max * std::min<double>(found.size(), 10) / 10.0;
  if (found.size() < 5)
    suggestions.push_back("Only " + std::to_string(found.size()) +
                          " recognised skills; list the tools and technologies you use by name.");

  json breakdown = {{"completeness", part(completeness, 30)},
                    {"content", part(content, 25)},
                    {"readability", part(readable, 15)},
                    {"skills", part(skills_score, skills_max)}};
  breakdown["completeness"]["missing"] = missing;
  double total = completeness + content + readable + skills_score;

  json job_match = nullptr;
  if (with_job) {
    const auto wanted = taxonomy.find({}, *job_description);
    std::vector<std::string> matched, lacking;
    for (const auto* w : wanted)
      (std::find(found.begin(), found.end(), w) != found.end() ? matched : lacking)
          .push_back(w->name);
    const double ratio = wanted.empty() ? 0 : static_cast<double>(matched.size()) / wanted.size();
    const double match_score = 15 * ratio;
    total += match_score;
    breakdown["job_match"] = part(match_score, 15);
    job_match = {{"required", matched.size() + lacking.size()},
                 {"matched", matched},
                 {"missing", lacking},
                 {"percent", std::round(ratio * 100)}};
    if (wanted.empty()) {
      job_match["note"] = "the job description names no skill this analyzer knows";
    } else if (!lacking.empty()) {
      suggestions.push_back("The job asks for " + join(lacking) +
                            "; if you have them, say so in your skills or experience.");
    }
  }

  return {{"score", static_cast<int>(std::lround(total))},
          {"breakdown", breakdown},
          {"skills", {{"found", found_json}, {"by_category", by_category},
                      {"count", found.size()}}},
          {"readability", readability},
          {"job_match", job_match},
          {"suggestions", suggestions}};
}

}  // namespace cvtasks
