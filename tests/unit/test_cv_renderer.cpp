#include "cv_renderer.h"

#include <gtest/gtest.h>

#include "core/protocol/task_error.h"

namespace cvtasks {
namespace {

const json kHostile = json::parse(R"({
  "full_name": "<script>alert('xss')</script> Mallory",
  "headline": "<iframe src=\"file:///etc/passwd\"></iframe>",
  "summary": "{{ mustache }} {{{ raw }}} & co",
  "skills": ["<b>C++</b>"], "experience": [], "education": [],
  "languages": [{"name": "English", "level": "<u>C2</u>"}]})");

TEST(CvRenderer, EscapesEveryValueInEveryShippedTemplate) {
  const CvRenderer r("", "classic");
  ASSERT_EQ(r.available(), (std::vector<std::string>{"classic", "modern"}));
  for (const auto& name : r.available()) {
    const RenderedHtml out = r.render(kHostile, name);
    EXPECT_EQ(out.template_name, name);
    EXPECT_EQ(out.html.find("<script>"), std::string::npos) << name;
    EXPECT_EQ(out.html.find("<iframe"), std::string::npos) << name;
    EXPECT_EQ(out.html.find("<b>C++"), std::string::npos) << name;
    EXPECT_NE(out.html.find("&lt;script&gt;alert(&apos;xss&apos;)&lt;/script&gt; Mallory"),
              std::string::npos) << name;
    EXPECT_NE(out.html.find("{{ mustache }} {{{ raw }}} &amp; co"), std::string::npos) << name;
    // An empty list has no heading.
    EXPECT_EQ(out.html.find("Experience"), std::string::npos) << name;
  }
}

TEST(CvRenderer, AssetsPointAtTheTemplatesOwnFolder) {
  const RenderedHtml out = CvRenderer("", "classic").render(kHostile, "modern");
  EXPECT_NE(out.html.find("href=\"file://" + out.asset_dir + "/style.css\""), std::string::npos);
}

TEST(CvRenderer, RefusesPathsAndUnknownNames) {
  const CvRenderer r("", "classic");
  for (const char* bad : {"../modern", "/etc", "", "modern/.."})
    EXPECT_THROW(r.render(kHostile, std::string(bad)), TaskError) << bad;
  try {
    r.render(kHostile, std::string("fancy"));
    FAIL();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.info().type, "ValueError");
    EXPECT_NE(std::string(e.what()).find("classic, modern"), std::string::npos);
  }
}

}  // namespace
}  // namespace cvtasks
