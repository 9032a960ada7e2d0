// The built-in CV analyzer (tasks/cv_analyzer.h) on the shipped skills taxonomy.
#include <gtest/gtest.h>

#include "core/base/errors.h"
#include "cv_analyzer.h"

namespace cvtasks {
namespace {

const SkillTaxonomy& taxonomy() {
  static const SkillTaxonomy t = SkillTaxonomy::load(CVTASKS_SOURCE_DIR "/tasks/data/skills.json");
  return t;
}

std::vector<std::string> names(const std::vector<const SkillTaxonomy::Skill*>& skills) {
  std::vector<std::string> out;
  for (const auto* s : skills) out.push_back(s->name);
  return out;
}

json full_cv() {
  return json::parse(R"({
    "full_name": "Alice Martin", "email": "alice@example.com", "phone": "+33 6 12 34 56 78",
    "location": "Lyon, France", "headline": "Backend engineer",
    "summary": "Eight years building web back ends and data pipelines for products used by millions. I like making slow things fast and hard things simple. I have led small teams, mentored juniors and run the on-call rotation. I want to work on distributed systems where performance matters, with people who care about quality and write things down.",
    "skills": ["Python", "Django", "C++", "PostgreSQL", "Redis", "Docker", "Kubernetes", "Git", "Go", "Linux"],
    "experience": [
      {"title": "Senior backend engineer", "company": "Lumen", "start": "2021-03", "end": null,
       "description": "Led the move of the task system from Python to C++. Cut the p95 latency by 80% and the cloud bill by a third."},
      {"title": "Software engineer", "company": "Octo", "start": "2017-09", "end": "2021-02",
       "description": "Built Django APIs for two million users. Tuned PostgreSQL queries and joined the on-call rotation."}],
    "education": [{"degree": "MSc Computer Science", "institution": "INSA Lyon"}],
    "languages": [{"name": "French", "level": "native"}]})");
}

TEST(SkillTaxonomy, WholeWordsOnlyAndExactOnlySkillsMustBeListed) {
  EXPECT_EQ(names(taxonomy().find({}, "Ten years of JavaScript and node.js")),
            (std::vector<std::string>{"JavaScript", "Node.js"}));
  EXPECT_EQ(names(taxonomy().find({}, "C++ and C# daily; I go to meetups; R&D")),
            (std::vector<std::string>{"C++", "C#"}));
  EXPECT_EQ(names(taxonomy().find({"go", "C", "Python 3"}, "")),
            (std::vector<std::string>{"Python", "C", "Go"}));
  EXPECT_EQ(names(taxonomy().find({"golang"}, "")), (std::vector<std::string>{"Go"}));
}

TEST(SkillTaxonomy, MalformedFileIsAConfigErrorNamingIt) {
  EXPECT_THROW(SkillTaxonomy::load("/nonexistent/skills.json"), ConfigError);
  EXPECT_THROW(SkillTaxonomy::from_json(json::parse(R"({"categories": {"x": [{"aliases": []}]}})")),
               json::exception);
}

TEST(CvAnalyzer, CompleteCvScoresHighWithABreakdownThatAddsUp) {
  const json a = analyze_cv(full_cv(), std::nullopt, taxonomy());
  const json& b = a["breakdown"];
  EXPECT_EQ(b["completeness"]["score"], 30);
  EXPECT_TRUE(b["completeness"]["missing"].empty());
  EXPECT_EQ(b["skills"]["max"], 30);
  EXPECT_GE(a["skills"]["count"], 10);  // the listed ten, and more found in the prose
  EXPECT_FALSE(a.contains("job_match") && !a["job_match"].is_null());
  double sum = 0;
  for (const auto& [k, v] : b.items()) sum += v["score"].get<double>();
  EXPECT_EQ(a["score"], std::lround(sum));
  EXPECT_GE(a["score"].get<int>(), 85) << a.dump(2);
  EXPECT_LE(a["score"].get<int>(), 100);
}

TEST(CvAnalyzer, EmptyOrMistypedCvScoresLowAndSaysWhatToAdd) {
  const json odd = json::parse(
      R"({"full_name": 42, "skills": "Python", "experience": [1, "x", null], "summary": null})");
  for (const json& cv : {json::object(), odd}) {
    const json a = analyze_cv(cv, std::nullopt, taxonomy());
    EXPECT_LE(a["score"].get<int>(), 10) << a.dump(2);
    EXPECT_EQ(a["breakdown"]["completeness"]["missing"].size(), 10u);
    const std::string all = a["suggestions"].dump();
    EXPECT_NE(all.find("Add your full name."), std::string::npos);
    EXPECT_NE(all.find("Write a summary"), std::string::npos);
  }
}

TEST(CvAnalyzer, JobDescriptionMatchListsMatchedAndMissingSkills) {
  const json a = analyze_cv(
      full_cv(), "We need Python, Kubernetes and Terraform; AWS is a plus.", taxonomy());
  EXPECT_EQ(a["breakdown"]["skills"]["max"], 15);
  EXPECT_EQ(a["breakdown"]["job_match"]["max"], 15);
  EXPECT_EQ(a["job_match"]["matched"], json({"Python", "Kubernetes"}));
  EXPECT_EQ(a["job_match"]["missing"], json({"AWS", "Terraform"}));
  EXPECT_EQ(a["job_match"]["percent"], 50);
  EXPECT_EQ(a["breakdown"]["job_match"]["score"], 7.5);
  EXPECT_NE(a["suggestions"].dump().find("The job asks for AWS, Terraform"), std::string::npos);
}

TEST(CvAnalyzer, SummaryLengthBoundaries) {
  auto content_for = [](int words) {
    json cv = json::object();
    std::string s;
    for (int i = 0; i < words; ++i) s += "word ";
    cv["summary"] = s;
    return analyze_cv(cv, std::nullopt, taxonomy())["breakdown"]["content"]["score"];
  };
  EXPECT_EQ(content_for(19), 2);
  EXPECT_EQ(content_for(20), 5);
  EXPECT_EQ(content_for(40), 8);
  EXPECT_EQ(content_for(120), 8);
  EXPECT_EQ(content_for(121), 5);
  EXPECT_EQ(content_for(201), 2);
}

TEST(CvAnalyzer, NonLatinTextIsCountedButNotFleschScored) {
  json cv = {{"summary", "负责大规模数据管道与实时分析。每日处理五太字节数据。"}};
  const json a = analyze_cv(cv, std::nullopt, taxonomy());
  EXPECT_EQ(a["readability"]["script"], "other");
  EXPECT_TRUE(a["readability"]["flesch_reading_ease"].is_null());
  EXPECT_EQ(a["readability"]["sentences"], 2);
  EXPECT_GT(a["readability"]["words"].get<double>(), 5);
  EXPECT_EQ(a["breakdown"]["readability"]["score"], 12);
}

TEST(CvAnalyzer, HostileContentIsJustText) {
  json cv = full_cv();
  cv["summary"] = "<script>alert(1)</script> {{ x }} \xff\xfe broken utf-8";
  cv["skills"] = {"<b>Python</b>", "SQL'); DROP TABLE cv_cv;--"};
  const json a = analyze_cv(cv, std::nullopt, taxonomy());
  EXPECT_EQ(a["skills"]["found"][0]["name"], "Python");
  EXPECT_NO_THROW(a.dump(-1, ' ', false, json::error_handler_t::replace));
}

}  // namespace
}  // namespace cvtasks
